"""The golden set: a few held-out images that travel with a version, with the probabilities
the published model gave them, so that every load can prove the weights still compute the same
function (not only that they have the right shapes).

File format (``golden.pt`` in the version directory, covered by the sha256 manifest of
``metadata.json``): a dict of tensors only, loadable with ``weights_only=True``::

    images         uint8   (N, C, H, W)   as the model sees them before normalisation
    probabilities  float32 (N, classes)   softmax of the published fp32 weights, on CPU
    labels         int64   (N,)           the true classes (for people reading the set)

Tolerances (:data:`TOLERANCES`), on the largest absolute difference of any probability:

- ``float32``: 1e-3. CPU fp32 reproduces itself to ~1e-6; the slack is for CUDA, where
  cuDNN convolutions use TF32 by default on Ampere and later (about 10 bits of mantissa).
- ``bfloat16`` / ``float16``: 5e-2. bf16 keeps 8 bits of mantissa; measured on the shipped
  ``wide_cnn`` and ``mlp`` on CPU the worst probability moved by under 1e-2 (docs/retraining.md).

The top-1 class must match exactly in every precision; that is why training picks images whose
top-1 probability leads the runner-up by at least :data:`MIN_MARGIN`, far more than any
tolerance, so a correct model never fails the check by rounding.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from artifacts.errors import ArtifactValidationError
from artifacts.preprocess import EvalTransform, InputSpec
from artifacts.storage import CorruptFileError, safe_torch_load

GOLDEN_FILE = "golden.pt"
GOLDEN_SIZE = 32
MIN_MARGIN = 0.2
TOLERANCES = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}


class GoldenSetError(ArtifactValidationError):
    """A golden set that is malformed, or a model that does not reproduce it."""


def golden_probabilities(model: nn.Module, spec: InputSpec, images: torch.Tensor) -> torch.Tensor:
    """fp32 CPU softmax of uint8 ``images``: how golden sets are made, and checked at publish."""
    with torch.inference_mode():
        return model(EvalTransform(spec=spec)(images)).float().softmax(dim=1)


@dataclass(frozen=True)
class GoldenSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    probabilities: torch.Tensor  # (N, classes) float32
    labels: torch.Tensor  # (N,) int64

    def __post_init__(self) -> None:
        n = len(self.images)
        if (self.images.dtype != torch.uint8 or self.images.dim() != 4
                or self.probabilities.dtype != torch.float32 or self.probabilities.dim() != 2
                or self.labels.dtype != torch.int64 or self.labels.shape != (n,)
                or len(self.probabilities) != n or n == 0):
            raise GoldenSetError(
                f"malformed golden set: images {self.images.dtype} {tuple(self.images.shape)}, "
                f"probabilities {self.probabilities.dtype} {tuple(self.probabilities.shape)}, "
                f"labels {self.labels.dtype} {tuple(self.labels.shape)}")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"images": self.images.contiguous(), "labels": self.labels.contiguous(),
                    "probabilities": self.probabilities.contiguous()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = GOLDEN_FILE) -> "GoldenSet":
        try:
            content = safe_torch_load(data, what=what)
        except CorruptFileError as exc:
            raise GoldenSetError(str(exc)) from exc
        if not isinstance(content, dict) or set(content) != {"images", "labels", "probabilities"} \
                or not all(isinstance(v, torch.Tensor) for v in content.values()):
            raise GoldenSetError(f"{what} is not a golden set (a dict of images, labels and "
                                 "probabilities tensors)")
        return cls(content["images"], content["probabilities"], content["labels"])

    def verify(self, probabilities: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
               *, spec: InputSpec, classes: int, what: str) -> None:
        """Raise :class:`GoldenSetError` unless ``probabilities(self.images)`` (a model's float32
        softmax) reproduces the set within the tolerance of ``dtype``, top-1 exactly."""
        if tuple(self.images.shape[1:]) != (spec.channels, spec.height, spec.width) \
                or self.probabilities.shape[1] != classes:
            raise GoldenSetError(
                f"{what}: golden set of {tuple(self.images.shape[1:])} images and "
                f"{self.probabilities.shape[1]} classes does not fit a {spec.channels}x"
                f"{spec.height}x{spec.width} model with {classes} classes")
        problem = self.compare(probabilities(self.images), dtype)
        if problem is not None:
            raise GoldenSetError(f"{what} fails its golden set: {problem}")

    def compare(self, probabilities: torch.Tensor, dtype: torch.dtype) -> str | None:
        """Why ``probabilities`` (a model's float32 output on :attr:`images`) do not reproduce
        the set in precision ``dtype``, or None when they do."""
        expected = self.probabilities
        if probabilities.shape != expected.shape:
            return f"output shape {tuple(probabilities.shape)} != {tuple(expected.shape)}"
        if not torch.isfinite(probabilities).all():
            return "the golden images produced NaN/inf"
        flipped = (probabilities.argmax(dim=1) != expected.argmax(dim=1)).nonzero().flatten()
        if len(flipped):
            i = int(flipped[0])
            return (f"top-1 differs on {len(flipped)} of {len(expected)} golden images (image "
                    f"{i}: class {int(probabilities[i].argmax())} instead of "
                    f"{int(expected[i].argmax())})")
        drift = float((probabilities - expected).abs().max())
        tolerance = TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])
        if drift > tolerance:
            return (f"probabilities differ from the golden set by up to {drift:.2e} "
                    f"(tolerance {tolerance:.0e} in {str(dtype).removeprefix('torch.')})")
        return None
