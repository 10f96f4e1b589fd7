"""The ONNX export: the model as an ONNX graph for ONNX Runtime, Triton or any other runtime.

Made by the dynamo exporter (``torch.onnx.export(..., dynamo=True)``), which traces the model
with ``torch.export`` (the TorchScript exporter is deprecated). The graph takes ``input``,
float32 ``(batch, C, H, W)`` already normalised, and gives ``logits`` ``(batch, classes)``; the
batch axis is dynamic, so one file serves batch 1 and a batcher's full batches. The file is
self-contained (weights inside, no external data) and carries the preprocessing contract in
its ``metadata_props``, so a client holding only ``model.onnx`` can read what to feed it
(ONNX Runtime: ``session.get_modelmeta().custom_metadata_map``).

``onnx``, ``onnxscript`` and ``onnxruntime`` come with the ``export`` extra; they are imported
only here, when an ONNX export is asked for, so the rest of the project runs without them.
"""

import importlib.util
import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.export.errors import ExportError, first_line

REQUIRED = ("onnx", "onnxscript", "onnxruntime")
INPUT_NAME, OUTPUT_NAME = "input", "logits"
BATCH_AXIS = "batch"
MIN_OPSET = 18  # below it the exporter must down-convert, which fails on common operators


def require_onnx(*, opset: int) -> None:
    """Fail at once, before any work, when the ``export`` extra is missing (naming the install
    command) or ``opset`` is one the exporter cannot write."""
    missing = [module for module in REQUIRED if importlib.util.find_spec(module) is None]
    if missing:
        raise ExportError(f"the ONNX export needs {', '.join(missing)} (not installed): "
                          "pip install -e '.[export]'")
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old for the dynamo exporter: use {MIN_OPSET} or newer")


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, *, opset: int,
                metadata: dict[str, str]) -> None:
    """Write ``model`` (fp32, eval mode, CPU) to ``path`` as ONNX with a dynamic batch axis,
    tracing it on ``example`` (a batch of at least 2, so the batch size is not specialised).

    ``metadata`` (string keys and values) goes into the file's ``metadata_props``. Raises
    :class:`ExportError` when the exporter fails or gives a graph whose batch is fixed."""
    require_onnx(opset=opset)
    import onnx

    batch = torch.export.Dim(BATCH_AXIS, min=1)
    try:
        with _quiet("onnx_ir", "onnxscript"):  # their INFO lines name every optimisation pass
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),  # by position: the forward's argument name is the model's
                opset_version=opset, external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises its own error types, several layers deep
        raise ExportError(f"the ONNX exporter failed: {first_line(exc)}") from exc
    program.model.metadata_props.update(metadata)
    program.save(path, external_data=False)
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    if [i.name for i in graph.input] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME] \
            or len(dims) != 4 or dims[0].dim_param == "":
        raise ExportError(f"the ONNX graph does not take one {INPUT_NAME} of dynamic batch and give "
                          f"{OUTPUT_NAME}: inputs {[i.name for i in graph.input]}, first axis "
                          f"{dims[0] if dims else 'none'}")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        raise ExportError(f"the ONNX graph fails onnx.checker: {first_line(exc)}") from exc


def onnx_probabilities(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving the class probabilities ONNX Runtime (CPU) computes from ``path`` for a
    normalised float32 ``(N, C, H, W)`` batch: the parity check runs the file as a client would."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def probabilities(batch: np.ndarray) -> np.ndarray:
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]  # (N, classes)
        return torch.from_numpy(logits).float().softmax(dim=1).numpy()

    return probabilities


def library_versions() -> dict[str, str]:
    """The versions of the libraries that wrote and checked the file, for the manifest."""
    import onnx
    import onnxruntime
    import onnxscript

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__}


@contextmanager
def _quiet(*names: str):
    """Loggers ``names`` at WARNING or above for the duration (their own levels restored)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
