"""The Triton model repository: the ONNX graph laid out for Triton Inference Server's
ONNX Runtime backend, so ``tritonserver --model-repository=<exports>/triton`` serves the model.

    triton/<model>/config.pbtxt          platform onnxruntime_onnx, dynamic batching, the tensors
    triton/<model>/labels.txt            one class label a line, in index order
    triton/<model>/<version>/model.onnx  the same bytes as the ONNX export

Triton serves the graph as it is: it does not decode or normalise images. The preprocessing
contract is written as comments at the top of ``config.pbtxt`` (and in ``export.json``); a
client that sends raw pixels gets wrong answers without an error, so the contract travels with
the model rather than living only in the documentation.
"""

import json
from pathlib import Path

from artifacts.preprocess import InputSpec
from artifacts.storage import atomic_write_bytes
from training.export.errors import ExportError

CONFIG_FILE, LABELS_FILE, MODEL_FILE = "config.pbtxt", "labels.txt", "model.onnx"
PLATFORM = "onnxruntime_onnx"


def write_repository(root: Path, *, name: str, version: str, onnx_model: bytes, spec: InputSpec,
                     labels: list[str], input_name: str, output_name: str, max_batch_size: int) -> list[Path]:
    """Lay out the model repository of ``name`` under ``root`` (its ``triton/`` folder); returns
    the files written."""
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise ExportError(f"Triton's labels.txt holds one label a line; these labels span lines: {bad!r:.80}")
    model = root / name
    files = {
        model / CONFIG_FILE: config_text(name=name, version=version, spec=spec, classes=len(labels),
                                         input_name=input_name, output_name=output_name,
                                         max_batch_size=max_batch_size).encode(),
        model / LABELS_FILE: "".join(f"{label}\n" for label in labels).encode(),
        model / version / MODEL_FILE: onnx_model,
    }
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return list(files)


def config_text(*, name: str, version: str, spec: InputSpec, classes: int, input_name: str,
                output_name: str, max_batch_size: int) -> str:
    """``config.pbtxt`` (protobuf text of Triton's ``inference.ModelConfig``), the
    preprocessing contract in its leading comments."""
    mode = "grayscale (PIL mode L)" if spec.channels == 1 else "RGB"
    mean, std = json.dumps(list(spec.mean)), json.dumps(list(spec.std))  # exact, as in metadata.json
    return f"""\
# {name} version {version}, exported by `python -m training export` (manifest: ../../export.json).
#
# Preprocessing contract: Triton does not do it, the client must.
#   1. decode the image; composite transparency on black; convert to {mode};
#      resize to {spec.width}x{spec.height} (width x height), bilinear.
#   2. x[c, h, w] = (pixel[c, h, w] / 255 - mean[c]) / std[c]
#      mean = {mean}   std = {std}
#   3. float32, layout NCHW: {input_name} is ({spec.channels}, {spec.height}, {spec.width}) per image;
#      Triton adds the batch axis.
# Output: {output_name}, float32 ({classes},) per image; softmax over it gives the class
# probabilities, in the order of labels.txt.
name: "{name}"
platform: "{PLATFORM}"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{input_name}"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ {spec.channels}, {spec.height}, {spec.width} ]
  }}
]
output [
  {{
    name: "{output_name}"
    data_type: TYPE_FP32
    dims: [ {classes} ]
    label_filename: "{LABELS_FILE}"
  }}
]
dynamic_batching {{ }}
"""
