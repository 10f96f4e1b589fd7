"""The torch.export export: ``model.pt2``, an ``ExportedProgram`` of the model's ATen graph.

For users who stay in PyTorch but want the model without this project's code:
``torch.export.load("model.pt2").module()`` gives a callable module that needs no import of
``models`` (the graph is stored as operators, never as pickled Python code; the weights as
plain tensor data). The program takes the same normalised float32 ``(batch, C, H, W)`` input as
the ONNX graph, with a dynamic batch axis, and is the starting point of AOTInductor
(``torch._inductor.aoti_compile_and_package``) or ExecuTorch where one is wanted.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.export.errors import ExportError, first_line

BATCH_AXIS = "batch"


def export_program(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write ``model`` (fp32, eval mode, CPU) to ``path`` as an ``ExportedProgram``, traced on
    ``example`` (a batch of at least 2, so the batch size is not specialised)."""
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises UserError, GuardOnDataDependent, ... deep inside
        raise ExportError(f"torch.export could not trace the model with a dynamic batch: {first_line(exc)}") from exc
    torch.export.save(program, path)


def program_probabilities(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving the class probabilities of the program saved at ``path``, loaded back
    as a user loads it, for a normalised float32 ``(N, C, H, W)`` batch."""
    module = torch.export.load(path).module()

    def probabilities(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).float().softmax(dim=1).numpy()

    return probabilities
