"""``export_version``: build the asked formats aside, check each against the model, then put
them in place, one format at a time, and write the manifest last.

Every format is made in a staging directory inside ``exports/<version>/`` (same filesystem) and
must give the model's probabilities within :data:`PARITY_TOLERANCE` on the version's golden set
(held-out test images), at batch 1 and at the full set, before anything is moved into place:
``model.onnx`` and ``model.pt2`` by ``os.replace``, ``triton/`` by a directory swap
(:func:`artifacts.storage.replace_directory`). A failed export leaves the previous exports as
they were. An flock on the export directory serialises two exports of one version.
"""

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifacts.golden import golden_probabilities
from artifacts.locks import open_locked
from artifacts.metadata import TTA_FIELD
from artifacts.preprocess import EvalTransform
from artifacts.registry import Artifact, exports_dir, load_artifact
from artifacts.storage import replace_directory
from training.export import DEFAULT_MAX_BATCH_SIZE, DEFAULT_OPSET, FORMATS
from training.export.errors import ExportError
from training.export.manifest import NORMALISATION, contract, format_entry, read_manifest, write_manifest

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4  # on any class probability, against the eager fp32 model on the CPU
ONNX_FILE, PROGRAM_FILE, TRITON_DIR = "model.onnx", "model.pt2", "triton"


@dataclass(frozen=True)
class ExportResult:
    directory: Path  # registry/<model>/exports/<version>
    manifest: dict[str, Any]  # export.json as written


def export_version(registry: Path, name: str, version: str, formats: Iterable[str] = FORMATS, *,
                   opset: int = DEFAULT_OPSET, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> ExportResult:
    """Export published ``version`` of ``name`` in ``formats`` (of :data:`FORMATS`) to
    ``registry/<name>/exports/<version>/``, replacing earlier exports of those formats.

    Raises what :func:`~artifacts.registry.load_artifact` raises for a version that fails
    verification (nothing is exported from a tampered artifact), and :class:`ExportError` for a
    format that cannot be made or does not reproduce the model."""
    formats = list(dict.fromkeys(formats))
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(f"unknown export format {', '.join(unknown) or 'none'}: use {', '.join(FORMATS)}")
    if "triton" in formats and max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, got {max_batch_size}")
    if "onnx" in formats or "triton" in formats:
        from training.export.onnx import require_onnx

        require_onnx(opset=opset)  # before the model loads: a missing extra fails at once
    artifact = load_artifact(registry, name, version)
    directory = exports_dir(registry, name, version)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        _clear_leftovers(directory, artifact)
        staging = directory / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            entries = _build(artifact, formats, staging, opset=opset, max_batch_size=max_batch_size)
            for fmt in formats:  # checked, all of them: now into place, each at once
                if fmt == "triton":
                    replace_directory(staging / TRITON_DIR, directory / TRITON_DIR)
                else:
                    target = ONNX_FILE if fmt == "onnx" else PROGRAM_FILE
                    os.replace(staging / target, directory / target)
            manifest = write_manifest(directory, header=_header(artifact), formats=entries)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s version %s as %s to %s", name, version, ", ".join(formats), directory)
    return ExportResult(directory=directory, manifest=manifest)


def _build(artifact: Artifact, formats: list[str], staging: Path, *, opset: int,
           max_batch_size: int) -> dict[str, dict[str, Any]]:
    """Make and check every format in ``staging``; returns their manifest entries."""
    model, spec, labels = artifact.model, artifact.input_spec, artifact.class_labels
    images, source = _parity_images(artifact)
    batch = EvalTransform(spec=spec)(images).numpy()  # (N, C, H, W) float32, normalised
    expected = golden_probabilities(model, spec, images).numpy()  # (N, classes)
    # Traced on zeros, not on test images: torch.export keeps its example inputs in model.pt2.
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    entries: dict[str, dict[str, Any]] = {}
    if "onnx" in formats or "triton" in formats:
        from training.export.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, library_versions, onnx_probabilities

        onnx_path = staging / ONNX_FILE
        export_onnx(model, example, onnx_path, opset=opset, metadata=_onnx_metadata(artifact))
        parity = _parity(onnx_probabilities(onnx_path), batch, expected, what="the ONNX export (ONNX Runtime CPU)",
                         source=source)
        details = {"opset": opset, "libraries": library_versions(), "parity": parity}
        if "onnx" in formats:
            entries["onnx"] = format_entry(staging, [onnx_path], **details)
        if "triton" in formats:
            from training.export.triton import PLATFORM, write_repository

            files = write_repository(staging / TRITON_DIR, name=artifact.name, version=artifact.version,
                                     onnx_model=onnx_path.read_bytes(), spec=spec, labels=labels,
                                     input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                                     max_batch_size=max_batch_size)
            entries["triton"] = format_entry(staging, files, platform=PLATFORM, max_batch_size=max_batch_size,
                                             **details)
    if "torch-export" in formats:
        from training.export.program import export_program, program_probabilities

        program_path = staging / PROGRAM_FILE
        export_program(model, example, program_path)
        parity = _parity(program_probabilities(program_path), batch, expected,
                         what="the torch.export program", source=source)
        entries["torch-export"] = format_entry(staging, [program_path], libraries={"torch": torch.__version__},
                                               parity=parity)
    return entries


def _parity_images(artifact: Artifact) -> tuple[torch.Tensor, str]:
    """uint8 ``(N, C, H, W)`` images to check the exports on: the golden set (held-out test
    images), or for versions published before golden sets, seeded random pixels."""
    if artifact.golden is not None:
        return artifact.golden.images, "golden set"
    spec = artifact.input_spec
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, spec.channels, spec.height, spec.width), dtype=torch.uint8,
                           generator=generator)
    return images, "random pixels (the version has no golden set)"


def _parity(probabilities: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, expected: np.ndarray,
            *, what: str, source: str) -> dict[str, Any]:
    """Raise :class:`ExportError` unless ``probabilities`` reproduces ``expected`` within
    :data:`PARITY_TOLERANCE` at batch 1 and at the full batch; returns the figures."""
    drift = max(float(np.abs(probabilities(batch[:1]) - expected[:1]).max()),
                float(np.abs(probabilities(batch) - expected).max()))
    if not drift <= PARITY_TOLERANCE:  # NaN fails too
        raise ExportError(f"{what} differs from the model by up to {drift:.2e} in probability on the "
                          f"{source} (tolerance {PARITY_TOLERANCE:.0e}); nothing was written")
    return {"inputs": source, "images": len(batch), "batch_sizes": sorted({1, len(batch)}),
            "max_abs_probability_difference": drift, "tolerance": PARITY_TOLERANCE}


def _header(artifact: Artifact) -> dict[str, Any]:
    from training.export.onnx import INPUT_NAME, OUTPUT_NAME

    metadata = artifact.metadata
    return {
        "model": artifact.name, "version": artifact.version,
        "source": {"weights_sha256": artifact.sha256, "architecture": metadata["architecture"],
                   "architecture_kwargs": metadata["architecture_kwargs"],
                   "created_at": metadata.get("created_at")},
        **contract(artifact.input_spec, artifact.class_labels, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                   test_time_augmentation=metadata.get(TTA_FIELD, "none")),
    }


def _onnx_metadata(artifact: Artifact) -> dict[str, str]:
    """The contract inside model.onnx itself (``metadata_props``: strings only, lists as JSON)."""
    spec = artifact.input_spec
    return {"model": artifact.name, "version": artifact.version, "weights_sha256": artifact.sha256,
            "class_labels": json.dumps(artifact.class_labels), "layout": "NCHW",
            "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "normalisation": NORMALISATION,
            "output": "logits: softmax over the last axis gives the class probabilities"}


def _clear_leftovers(directory: Path, artifact: Artifact) -> None:
    """Under the lock: remove what a crashed export left (staging and trash directories), and
    exports of other weights under this version number (a registry rebuilt by hand)."""
    for path in directory.iterdir():
        if path.name.startswith((".staging-", ".trash-")):
            shutil.rmtree(path, ignore_errors=True)
    manifest = read_manifest(directory)
    source = (manifest or {}).get("source") or {}
    if manifest is not None and source.get("weights_sha256") != artifact.sha256:
        log.warning("%s: exports of other weights (sha256 %.12s...) removed", directory,
                    source.get("weights_sha256"))
        for path in directory.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@contextmanager
def _locked(directory: Path):
    """An exclusive flock on the export directory for the whole export (see artifacts.locks)."""
    try:
        fd = open_locked(directory, os.O_RDONLY | os.O_DIRECTORY, wait=True)
    except OSError as exc:  # a filesystem without locks (some network mounts)
        log.warning("%s: cannot lock (%s); exporting unlocked", directory, exc)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
