"""``metadata.json``: what a published version says about itself, read and written here.

:func:`build_metadata` gives training the fields every artifact holds (the registry adds the
version, the date and the hashes at publish); :func:`read_metadata` checks a file's shape before
anyone trusts it; :class:`MetadataFields` is the one set of named accessors for every holder of
a version (the registry's :class:`~artifacts.registry.Artifact`, the service's loaded model).
"""

import json
from pathlib import Path
from typing import Any

from artifacts.errors import ArtifactValidationError, RegistryError
from artifacts.preprocess import InputSpec

METADATA_FILE = "metadata.json"
TTA_FIELD = "test_time_augmentation"  # how the model is evaluated (models.tta); absent = "none"


def build_metadata(
    *,
    name: str,
    architecture: str,
    architecture_kwargs: dict[str, Any],
    class_labels: list[str],
    input_spec: InputSpec,
    metrics: dict[str, float],
    dataset: str,
    config: dict[str, Any],
    test_time_augmentation: str = "none",
) -> dict[str, Any]:
    """The metadata of an artifact before publication (version, hash and date are added then).

    ``test_time_augmentation`` (``models.tta``) is part of how the model is evaluated: the
    loader wraps the model with it, so the service serves what the test figures measured."""
    return {
        "name": name,
        "architecture": architecture,
        "architecture_kwargs": architecture_kwargs,
        "class_labels": list(class_labels),
        "input": input_spec.to_dict(),
        TTA_FIELD: test_time_augmentation,
        "metrics": metrics,
        "dataset": dataset,
        "config": config,
    }


class MetadataFields:
    """Named access to the ``metadata.json`` fields every holder of a version reads."""

    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def sha256(self) -> str:
        return self.metadata["weights_sha256"]

    @property
    def class_labels(self) -> list[str]:
        return self.metadata["class_labels"]

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.metadata["input"])

    @property
    def files(self) -> dict[str, str]:
        """Beside-files and their sha256 (none for versions published before they existed)."""
        return self.metadata.get("files") or {}


_FIELD_TYPES = {"name": str, "version": str, "architecture": str, "weights_sha256": str,
                "metrics": dict, "dataset": (str, type(None)), "created_at": (str, type(None)),
                "files": dict}


def read_metadata(version_dir: Path) -> dict[str, Any]:
    try:
        metadata = json.loads((version_dir / METADATA_FILE).read_text("utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{version_dir} has no {METADATA_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactValidationError(f"{version_dir / METADATA_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ArtifactValidationError(f"{version_dir / METADATA_FILE} is not a JSON object")
    required = ("name", "version", "architecture", "architecture_kwargs", "class_labels", "input",
                "weights_sha256")
    missing = [key for key in required if key not in metadata]
    if missing:
        raise ArtifactValidationError(f"{version_dir / METADATA_FILE} lacks {', '.join(missing)}")
    # Fields the service shows as they are (GET /models): the wrong type is a broken file.
    wrong = [key for key, kind in _FIELD_TYPES.items()
             if key in metadata and not isinstance(metadata[key], kind)]
    if wrong:
        raise ArtifactValidationError(f"{version_dir / METADATA_FILE} has fields of the wrong "
                                      f"type: {', '.join(wrong)}")
    return metadata
