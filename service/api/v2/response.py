"""The v2 answers: the inference response (JSON, then the binary tensor data of the outputs
asked for in binary) and the model metadata, both built from the version that answers.

The predictor's results are each image's top-k classes, best first; ``probabilities`` scatters
them back into class order (``[N, classes]``, 0 for the classes past ``top_k``), ``label`` is
each image's best class. JSON is encoded directly with msgspec, as ``/predict``'s answer is.
"""

import sys
from array import array

import msgspec

from artifacts.preprocess import InputSpec
from service.api.v2.request import LABEL, PROBABILITIES, InferRequest
from service.api.v2.tensors import IMAGES, PIXELS
from service.inference.loading import LoadedModel
from service.schemas import Result, V2ModelMetadata, V2TensorMetadata

# Honest about the artifact: an nn.Module rebuilt from metadata.json, its state_dict loaded from
# weights.pt. The protocol's "pytorch_torchscript" would promise a TorchScript file there is not.
PLATFORM = "pytorch_statedict"


def infer_response(loaded: LoadedModel, request: InferRequest,
                   results: list[Result]) -> tuple[bytes, bytes]:
    """The JSON object of the answer and the binary data that follows it (empty when every
    output is in the JSON)."""
    scores = [row for rows, _ in results for row in rows]  # (N, top_k), best first
    indices = [row for _, rows in results for row in rows]
    outputs: list[dict] = []
    binary: list[bytes] = []
    for output in request.outputs:
        if output.name == PROBABILITIES:
            classes = len(loaded.labels)
            flat = _class_order(scores, indices, classes)  # (N * classes,)
            tensor = {"name": PROBABILITIES, "datatype": "FP32", "shape": [len(scores), classes]}
            # The scores are float32 values already (the forward's): packing loses nothing.
            data = _float32_le(flat) if output.binary else flat
        else:
            labels = [loaded.labels[row[0]] for row in indices]
            tensor = {"name": LABEL, "datatype": "BYTES", "shape": [len(labels)]}
            data = _bytes_tensor(labels) if output.binary else labels
        if output.binary:
            tensor["parameters"] = {"binary_data_size": len(data)}
            binary.append(data)
        else:
            tensor["data"] = data
        outputs.append(tensor)
    answer = {"model_name": loaded.name, "model_version": loaded.version, "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    return msgspec.json.encode(answer), b"".join(binary)


def _class_order(scores: list[list[float]], indices: list[list[int]], classes: int) -> list[float]:
    """Top-k rows -> ``(N, classes)`` flat, row-major, 0.0 for the classes past top-k. Plain
    Python: for the few rows of a request, faster than building numpy arrays."""
    flat = [0.0] * (len(scores) * classes)
    for row, (row_scores, row_indices) in enumerate(zip(scores, indices, strict=True)):
        base = row * classes
        for score, index in zip(row_scores, row_indices, strict=True):
            flat[base + index] = score
    return flat


def _float32_le(values: list[float]) -> bytes:
    """FP32 binary data: little-endian, whatever this machine's byte order."""
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _bytes_tensor(texts: list[str]) -> bytes:
    """BYTES elements as binary data: a 4-byte little-endian length, then the bytes, each."""
    parts = []
    for text in texts:
        data = text.encode()
        parts += [len(data).to_bytes(4, "little"), data]
    return b"".join(parts)


def model_metadata(loaded: LoadedModel, versions: list[str]) -> V2ModelMetadata:
    """Inputs (send one of them) and outputs of ``loaded``, with the versions one may ask for."""
    spec: InputSpec = loaded.spec
    return V2ModelMetadata(
        name=loaded.name, versions=versions, platform=PLATFORM,
        inputs=[V2TensorMetadata(name=IMAGES, datatype="BYTES", shape=[-1]),
                # UINT8 (0-255) or FP32 (0-1): one datatype is all the metadata can say.
                V2TensorMetadata(name=PIXELS, datatype="UINT8",
                                 shape=[-1, spec.channels, spec.height, spec.width])],
        outputs=[V2TensorMetadata(name=PROBABILITIES, datatype="FP32",
                                  shape=[-1, len(loaded.labels)]),
                 V2TensorMetadata(name=LABEL, datatype="BYTES", shape=[-1])],
    )
