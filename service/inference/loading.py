"""Load a published version for serving: verify, move to the device, check, warm up.

``artifacts.registry.load_artifact`` owns the artifact format and its checks (sha256 of the
weights and beside-files, ``weights_only`` load, strict ``load_state_dict`` into the
architecture rebuilt from ``metadata.json``, output width == number of labels, the golden set
in fp32 on the CPU). This module adds what serving needs on top: the device and precision, the
golden set run again through the exact serving path (device, dtype, channels-last:
:meth:`LoadedModel.probabilities`) within that dtype's tolerance (``artifacts.golden``), and
warm-up forwards at the batch sizes the batcher will use, so a version that would answer
differently from what was published is refused before it serves (docs/monitoring.md).

Versions published before golden sets existed still load, checked as before (the warm-up
outputs must be finite probabilities of the right width), with a warning and
``golden_set: false`` in ``/models``.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artifacts.devices import serving_dtype
from artifacts.golden import TOLERANCES, GoldenSet, GoldenSetError
from artifacts.metadata import MetadataFields
from artifacts.preprocess import EvalTransform, InputSpec
from artifacts.registry import ArtifactValidationError, load_artifact
from service import metrics

log = logging.getLogger(__name__)


EXHAUSTIVE_WARMUP_LIMIT = 256  # on CUDA every batch size up to this one is warmed


def warmup_sizes(device: torch.device, max_batch: int) -> list[int]:
    """The batch sizes a freshly loaded model runs once before it serves.

    On CUDA, every size the batcher can form: the first forward at a batch size cuDNN has not
    seen plans its kernels, measured at 27-43 ms for ResNet-18 (bf16) on an H100 against 2-3 ms
    once warm, and the batcher forms any size from 1 to ``max_batch`` (64 sizes: about 2 s more
    per load, on a GPU; past ``EXHAUSTIVE_WARMUP_LIMIT`` only powers of two). On the CPU only
    the two ends: oneDNN's first call at a new size costs a few ms more than a warm one, not
    10x, while running every size would hold a reload for seconds (2,080 images for ResNet-18
    at the default 64).
    """
    if device.type == "cuda":
        sizes = set(range(1, min(max_batch, EXHAUSTIVE_WARMUP_LIMIT) + 1))
        # Past the limit, powers of two: a MAX_BATCH_SIZE of 4096 must not hold a start for minutes.
        sizes.update(1 << k for k in range(max_batch.bit_length()) if 1 << k <= max_batch)
        sizes.add(max_batch)
        return sorted(sizes)
    return sorted({1, max_batch})


@dataclass(eq=False)  # identity semantics: the batcher never mixes two loaded versions
class LoadedModel(MetadataFields):
    """One version of one model, in ``eval()`` on its device, ready for forward passes."""

    metadata: dict[str, Any]
    model: nn.Module
    device: torch.device
    dtype: torch.dtype  # of the weights and the activations
    spec: InputSpec
    transform: EvalTransform
    labels: list[str]
    path: Path  # the version directory: the report endpoints read its beside-files
    golden_set: bool  # False: published before golden sets, checked by a forward on zeros
    loaded_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def precision(self) -> str:
        """``float32``, ``bfloat16`` or ``float16``: what logs and ``/models`` show."""
        return str(self.dtype).removeprefix("torch.")

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` on CPU -> float32 softmax ``(N, classes)`` on CPU.

        Call under ``torch.inference_mode()`` on the inference thread.
        """
        batch = batch.to(self.device, non_blocking=True)
        inputs = self.transform(batch).to(self.dtype, memory_format=torch.channels_last)
        logits = self.model(inputs)  # (N, classes)
        return logits.float().softmax(dim=1).cpu()


def load_model(
    registry: Path, name: str, version: str | None, *, device: torch.device, warmup_batch: int,
    precision: str = "fp32",
) -> LoadedModel:
    """Load, verify and warm up ``name`` (production when ``version`` is None).

    The weights are verified as published (fp32, CPU, golden set included), then converted once
    to the ``precision`` (``PRECISION``, see :func:`serving_dtype`) and the channels-last layout,
    and must reproduce the golden set again as they will serve.

    Raises ``RegistryError`` (nothing to load) or ``ArtifactValidationError`` (refused; a
    :class:`GoldenSetError` is also counted in ``imgclf_golden_set_failures_total``). Every
    call is counted in ``imgclf_version_loads_total`` by outcome.
    """
    # Resolved before the first refusal: the series exists at 0, so an alert on its increase
    # sees the first refusal too (deploy/prometheus/alerts.yml).
    golden_failures = metrics.GOLDEN_FAILURES.labels(name)
    outcome = "failed"
    try:
        loaded = _load(registry, name, version, device=device, warmup_batch=warmup_batch,
                       precision=precision)
        outcome = "loaded"
        return loaded
    except GoldenSetError:
        golden_failures.inc()
        outcome = "refused"
        raise
    except ArtifactValidationError:
        outcome = "refused"
        raise
    finally:
        metrics.VERSION_LOADS.labels(name, outcome).inc()


def _load(registry: Path, name: str, version: str | None, *, device: torch.device,
          warmup_batch: int, precision: str) -> LoadedModel:
    artifact = load_artifact(registry, name, version)  # checks name, version, hashes, golden (fp32)
    spec = artifact.input_spec
    dtype = serving_dtype(precision, device, artifact.model)
    loaded = LoadedModel(
        metadata=artifact.metadata,
        model=artifact.model.to(device=device, dtype=dtype, memory_format=torch.channels_last)
        .eval(),
        device=device,
        dtype=dtype,
        spec=spec,
        transform=EvalTransform(spec=spec),
        labels=list(artifact.class_labels),
        path=artifact.path,
        golden_set=artifact.golden is not None,
    )
    with torch.inference_mode():
        if artifact.golden is not None:
            deviation = _check_golden(loaded, artifact.golden)
            tolerance = TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])
            checked = f"golden set reproduced (max deviation {deviation:.1e}, tolerance {tolerance:.0e})"
        else:
            log.warning("%s v%s has no golden set (published before golden sets): checked by "
                        "a forward on zeros only", name, loaded.version)
            checked = "no golden set"
        for size in warmup_sizes(device, warmup_batch):
            probabilities = loaded.probabilities(
                torch.zeros(size, spec.channels, spec.height, spec.width, dtype=torch.uint8)
            )
            if artifact.golden is None:
                _check_zeros(loaded, probabilities, size)
    log.info(
        "loaded %s v%s (%s, %d labels, input %dx%dx%d) on %s in %s: %s", name, loaded.version,
        loaded.metadata["architecture"], len(loaded.labels), spec.channels, spec.height,
        spec.width, device, loaded.precision, checked,
    )
    return loaded


def _check_golden(loaded: LoadedModel, golden: GoldenSet) -> float:
    """Run the golden set through the serving path; raises :class:`GoldenSetError` unless it
    reproduces the published probabilities. Returns the largest deviation, for the log."""
    outputs: list[torch.Tensor] = []

    def served(images: torch.Tensor) -> torch.Tensor:
        outputs.append(loaded.probabilities(images))  # (N, classes) float32 on CPU
        return outputs[-1]

    golden.verify(served, loaded.dtype, spec=loaded.spec, classes=len(loaded.labels),
                  what=f"{loaded.name} v{loaded.version} on {loaded.device} in {loaded.precision}")
    return float((outputs[-1] - golden.probabilities).abs().max())


def _check_zeros(loaded: LoadedModel, probabilities: torch.Tensor, size: int) -> None:
    """The check of a version without a golden set: finite outputs, one per label."""
    if probabilities.shape != (size, len(loaded.labels)):
        raise ArtifactValidationError(
            f"{loaded.name} v{loaded.version}: output {tuple(probabilities.shape)} does not "
            f"match {len(loaded.labels)} labels"
        )
    if not torch.isfinite(probabilities).all():
        raise ArtifactValidationError(
            f"{loaded.name} v{loaded.version}: the test forward produced NaN/inf"
        )
