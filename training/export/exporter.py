"""``export_version``: build the whole new ``exports/<version>/`` aside, check every format
against the model, then swap it in at once.

The staging directory sits beside ``exports/<version>/`` (same filesystem). Every format asked
for is made there and must give the model's probabilities within :data:`PARITY_TOLERANCE` on
the version's golden set (held-out test images), at batch 1 and at the full set; the formats
exported earlier and not asked for now are hard-linked in (when their files still match the
manifest), the manifest is written, and the directory replaces the old one in one swap
(:func:`artifacts.storage.replace_directory`). A reader sees the old exports or the new ones,
never a mix; a failed export leaves the old ones as they were. The flock of
:func:`artifacts.production.export_lock` serialises exports of one version and pruning it.
"""

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from artifacts.golden import golden_probabilities
from artifacts.metadata import TTA_FIELD
from artifacts.preprocess import EvalTransform
from artifacts.production import export_lock
from artifacts.registry import Artifact, exports_dir, list_versions, load_artifact
from artifacts.storage import replace_directory, sha256_file
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
    with export_lock(registry, name, version):
        if version not in list_versions(registry, name):
            raise ExportError(f"{name} version {version} was pruned while it was being loaded; nothing exported")
        _clear_leftovers(directory)
        staging = directory.with_name(f".staging-{version}-{uuid.uuid4().hex}")
        staging.mkdir()
        try:
            entries = _build(artifact, formats, staging, opset=opset, max_batch_size=max_batch_size)
            kept = _link_earlier_formats(directory, staging, artifact, skip=formats)
            manifest = write_manifest(staging, header=_header(artifact), formats={**kept, **entries})
            _readable(staging)
            replace_directory(staging, directory)
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

        # the ONNX format's file, or only the graph the Triton repository holds (a hidden name,
        # removed below, so that it never stands in for model.onnx)
        onnx_path = staging / (ONNX_FILE if "onnx" in formats else f".{ONNX_FILE}")
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
        if "onnx" not in formats:
            onnx_path.unlink()
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


def _readable(root: Path) -> None:
    """Every file under ``root`` readable as a plain file written now would be (0644 under the
    usual umask): atomic writes start from mkstemp's 0600, and a Triton server or ONNX Runtime
    reading the exports usually runs as another user than the one that exported them."""
    umask = os.umask(0)  # read it back: the CLI is single-threaded here
    os.umask(umask)
    for path in root.rglob("*"):
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)


def _clear_leftovers(directory: Path) -> None:
    """Under the lock: remove what a crashed export of this version left beside ``directory``
    (its staging and trash directories)."""
    for prefix in (f".staging-{directory.name}-", f".trash-{directory.name}-"):
        for path in directory.parent.glob(f"{prefix}*"):
            shutil.rmtree(path, ignore_errors=True)


def _link_earlier_formats(directory: Path, staging: Path, artifact: Artifact, *,
                          skip: list[str]) -> dict[str, dict[str, Any]]:
    """Hard-link into ``staging`` the files of the formats exported earlier (not in ``skip``)
    whose files still match the manifest; returns their manifest entries. Exports of other
    weights under this version number (a registry rebuilt by hand) are dropped."""
    manifest = read_manifest(directory)
    if manifest is None:
        return {}
    if (manifest.get("source") or {}).get("weights_sha256") != artifact.sha256:
        log.warning("%s: exports of other weights dropped", directory)
        return {}
    kept = {}
    for fmt, entry in (manifest.get("formats") or {}).items():
        files = (entry or {}).get("files") if isinstance(entry, dict) else None
        if fmt in skip or not files or not all(
                (directory / f).is_file() and sha256_file(directory / f) == digest for f, digest in files.items()):
            continue
        for f in files:
            (staging / f).parent.mkdir(parents=True, exist_ok=True)
            os.link(directory / f, staging / f)
        kept[fmt] = entry
    return kept


