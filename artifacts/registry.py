"""The published model registry: the one owner of the artifact format (docs/architecture.md).

    registry/<model>/<version>/{weights.pt, metadata.json,   immutable once published
                                golden.pt, report.json, *.png, dataset.json}
    registry/<model>/production                               one line: the serving version
    registry/<model>/promotions.log                           one line per promotion (rollback)
    registry/<model>/exports/<version>/                       ONNX, torch.export, Triton (training.export)

Training publishes through :func:`publish`; the service reads through :func:`load_artifact`,
so both agree on the format by construction. Changing the production pointer (promote,
rollback, and the pruning that must spare their versions) is :mod:`artifacts.production`.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

import models
from artifacts.errors import ArtifactValidationError, RegistryError
from artifacts.golden import GOLDEN_FILE, GoldenSet, golden_probabilities
from artifacts.metadata import METADATA_FILE, TTA_FIELD, MetadataFields, read_metadata
from artifacts.preprocess import InputSpec
from artifacts.storage import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write_bytes,
    fsync_dir,
    safe_torch_load,
    sha256_file,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"
POINTER_FILE = "production"
REPORT_FILE = "report.json"  # the test split's evaluation per class (training.report)
REPORT_PICTURES = ("confusion", "reliability", "mistakes")  # <picture>.png beside it
EXPORTS_DIR = "exports"  # <model>/exports/<version>/: not a version (list_versions skips it)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[a-z0-9]{1,8}$")


def validate_name(name: str) -> str:
    """Model names become directory names: allow no path separators, dots-only or odd bytes."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or set(name) <= {"."}:
        raise RegistryError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise RegistryError(f"invalid version {version!r}: versions are positive integers")
    return version


def model_dir(registry: Path, name: str) -> Path:
    return Path(registry) / validate_name(name)


def exports_dir(registry: Path, name: str, version: str) -> Path:
    """Where the exports of a version live: beside the versions, never inside one, so that
    exporting changes none of a published version's files or hashes (pruning a version removes
    its exports too, :func:`artifacts.production.prune_versions`)."""
    return model_dir(registry, name) / EXPORTS_DIR / validate_version(version)


def list_versions(registry: Path, name: str) -> list[str]:
    """Published versions of ``name``, oldest first (temp directories are not versions)."""
    directory = model_dir(registry, name)
    if not directory.is_dir():
        return []
    versions = [p.name for p in directory.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
    return sorted(versions, key=int)


def read_production(registry: Path, name: str) -> str | None:
    """The version the production pointer names, or None when nothing is promoted yet."""
    pointer = model_dir(registry, name) / POINTER_FILE
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise RegistryError(f"the production pointer of {name} is not text") from None
    return validate_version(text)


def publish(registry: Path, metadata: dict[str, Any], state_dict: dict[str, torch.Tensor],
            files: dict[str, bytes] | None = None) -> str:
    """Publish a new immutable version; returns its number.

    ``files`` are written beside the weights (the golden set, the report and its pictures, the
    dataset manifest) and their sha256 recorded in ``metadata["files"]``, so the same hash check
    that guards the weights guards them (:func:`read_verified`).

    The version is built under a temp directory and renamed into place, so readers (and a
    crash) never see a half-written version; ``os.rename`` onto an existing directory fails,
    which also keeps two concurrent publishers from taking the same number.
    """
    files = dict(files or {})
    reserved = {WEIGHTS_FILE, METADATA_FILE} & set(files)
    if reserved or any(not _FILE_RE.match(n) for n in files):
        raise RegistryError(f"cannot publish beside-files named {sorted(files)}")
    name = validate_name(metadata["name"])
    directory = model_dir(registry, name)
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        atomic_torch_save(state_dict, staging / WEIGHTS_FILE)
        for file_name, data in files.items():
            atomic_write_bytes(staging / file_name, data)
        manifest = {n: hashlib.sha256(data).hexdigest() for n, data in sorted(files.items())}
        for _ in range(100):
            existing = list_versions(registry, name)
            version = str(int(existing[-1]) + 1 if existing else 1)
            full = {
                **metadata,
                "version": version,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "weights_sha256": sha256_file(staging / WEIGHTS_FILE),
                "files": manifest,
            }
            atomic_write_bytes(staging / METADATA_FILE, json.dumps(full, indent=2).encode())
            try:
                os.rename(staging, directory / version)
            except OSError:
                if (directory / version).exists():
                    continue  # another publisher took this number: take the next one
                raise
            fsync_dir(directory)
            log.info("published %s version %s to %s", name, version, directory / version)
            return version
        raise RegistryError(f"could not allocate a version number for {name}")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@dataclass
class Artifact(MetadataFields):
    """A published model, verified and ready to run on CPU."""

    metadata: dict[str, Any]
    model: nn.Module
    path: Path
    # None for versions published before golden sets existed: checked by a forward on zeros.
    golden: GoldenSet | None = None


def read_verified(version_dir: Path, metadata: dict[str, Any], file_name: str) -> bytes:
    """The bytes of a beside-file, after checking them against ``metadata["files"]``.

    Raises ``FileNotFoundError`` when the version has no such file (older versions) and
    :class:`ArtifactValidationError` when the file differs from what was published."""
    expected = (metadata.get("files") or {}).get(file_name)
    if expected is None:
        raise FileNotFoundError(f"{version_dir.name} has no {file_name}")
    try:
        data = (version_dir / file_name).read_bytes()
    except FileNotFoundError:
        raise ArtifactValidationError(
            f"{version_dir / file_name} is listed in {METADATA_FILE} but missing") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise ArtifactValidationError(
            f"{version_dir / file_name} sha256 {digest[:12]}... does not match metadata "
            f"{str(expected)[:12]}...: the file was modified or truncated")
    return data


def read_golden(version_dir: Path, metadata: dict[str, Any]) -> GoldenSet | None:
    """The verified golden set of a version, or None for versions published without one."""
    try:
        data = read_verified(version_dir, metadata, GOLDEN_FILE)
    except FileNotFoundError:
        return None
    return GoldenSet.from_bytes(data, what=str(version_dir / GOLDEN_FILE))


def _rebuild(metadata: dict[str, Any]) -> tuple[nn.Module, InputSpec, list[str]]:
    """The architecture ``metadata`` describes, untrained; malformed fields raise KeyError,
    TypeError or ValueError (a hand-edited file, or a future format this code does not know)."""
    labels = metadata["class_labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise TypeError(f"class_labels must be a non-empty list of strings, got {labels!r:.80}")
    kwargs = metadata["architecture_kwargs"]
    if not isinstance(kwargs, dict):
        raise TypeError(f"architecture_kwargs must be an object, got {kwargs!r:.80}")
    spec = InputSpec.from_dict(metadata["input"])
    if metadata.get(TTA_FIELD, "none") not in models.TEST_TIME_AUGMENTATIONS:
        raise ValueError(f"{TTA_FIELD} {metadata[TTA_FIELD]!r} is none of "
                         f"{', '.join(models.TEST_TIME_AUGMENTATIONS)}")
    model = models.build_model(metadata["architecture"], num_classes=len(labels),
                               in_channels=spec.channels, image_size=spec.size, **kwargs)
    return model, spec, labels


def load_artifact(registry: Path, name: str, version: str | None = None) -> Artifact:
    """Load and verify a published version (production when ``version`` is None).

    Checks, in order: the sha256 of ``weights.pt`` (and of the golden set) against the
    metadata, a weights-only load, that the architecture rebuilt from metadata accepts the
    state_dict exactly (strict), and that the model reproduces its golden set in fp32
    (:mod:`artifacts.golden`; versions without one: that a forward on zeros gives one output per
    class label). The model is returned in ``eval()`` mode on CPU.
    """
    if version is None:
        version = read_production(registry, name)
        if version is None:
            raise RegistryError(f"{name} has no production version in {registry}")
    version_dir = model_dir(registry, name) / validate_version(version)
    metadata = read_metadata(version_dir)
    if (metadata["name"], str(metadata["version"])) != (name, version):
        raise ArtifactValidationError(
            f"{version_dir / METADATA_FILE} describes {metadata['name']!r} version "
            f"{metadata['version']!r}, not {name!r} version {version!r} (copied by hand?)")
    weights = version_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise RegistryError(f"{version_dir} has no {WEIGHTS_FILE}")
    digest = sha256_file(weights)
    if digest != metadata["weights_sha256"]:
        raise ArtifactValidationError(
            f"{weights} sha256 {digest[:12]}... does not match metadata "
            f"{str(metadata['weights_sha256'])[:12]}...: the file was modified or truncated"
        )
    try:
        state_dict = safe_torch_load(weights)
    except CorruptFileError as exc:
        raise ArtifactValidationError(str(exc)) from exc
    try:
        model, spec, labels = _rebuild(metadata)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactValidationError(
            f"{version_dir / METADATA_FILE} does not describe a model that can be built: "
            f"{type(exc).__name__}: {exc}") from exc
    golden = read_golden(version_dir, metadata)
    try:
        model.load_state_dict(state_dict, strict=True)
        # evaluated as training evaluated it (models.tta); versions before TTA have no field
        model = models.with_test_time_augmentation(model, metadata.get(TTA_FIELD, "none"))
        model.eval()
        with torch.inference_mode():
            logits = model(torch.zeros(1, spec.channels, spec.height, spec.width))
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise ArtifactValidationError(f"{weights} does not fit {metadata['architecture']}: {exc}") from exc
    if logits.shape != (1, len(labels)):
        raise ArtifactValidationError(
            f"{name} v{version}: model outputs {tuple(logits.shape)} but there are {len(labels)} labels"
        )
    if golden is not None:
        golden.verify(lambda images: golden_probabilities(model, spec, images), torch.float32,
                      spec=spec, classes=len(labels), what=f"{name} v{version}")
    return Artifact(metadata=metadata, model=model, path=version_dir, golden=golden)
