"""Is there anything new to learn? The data a run would train on, against production's and
against the last candidate's.

A scheduled run first loads its data (the same splits it then trains on) and compares the
fingerprint (:mod:`training.data.fingerprint`) and the recipe with what production recorded.
Equal means the run would repeat production's training, or that of the last candidate the
gate kept out (a newer version than production): it is skipped, with the reason in the
report, unless forced (``SCHEDULE_FORCE=true``, ``schedule --force``): retraining exists
because data grew or the world drifted, and a day of CPU spent re-learning the same data buys
nothing but seed noise. Either way the report says how many samples each source has and how
many of them production never saw.
"""

import json
import logging
from pathlib import Path
from typing import Any

from artifacts import registry
from artifacts.metadata import read_metadata
from training.config import TrainConfig
from training.data.fingerprint import MANIFEST_FILE
from training.data.splits import DataSplits
from training.retrain.settings import recipe_fields

log = logging.getLogger(__name__)


def describe_data(registry_dir: Path, name: str, production: str | None, cfg: TrainConfig,
                  data: DataSplits) -> tuple[dict[str, Any], str | None]:
    """(the report's ``data`` section, why training would be pointless or None)."""
    fingerprint = data.fingerprint
    totals = {source: sum(sum(per_class.values()) for per_class in splits.values())
              for source, splits in data.counts.items()}
    metadata, manifest = _production_data(registry_dir, name, production)
    recorded = ((metadata or {}).get("data") or {}).get("fingerprint")
    section: dict[str, Any] = {
        "fingerprint": fingerprint.sha256 if fingerprint else None,
        "production_fingerprint": (recorded or {}).get("sha256"),
        "samples": totals,
        "new_samples": fingerprint.new_samples(recorded, manifest, totals) if fingerprint else None,
        "counts": data.counts,
    }
    if fingerprint is None:
        return section, None
    changed = _recipe_changes(metadata, cfg) if recorded and recorded.get("sha256") == fingerprint.sha256 else None
    if changed == []:
        return section, (f"data unchanged: fingerprint {fingerprint.sha256[:12]} and recipe equal "
                         f"production v{production}'s (SCHEDULE_FORCE=true or --force trains anyway)")
    if changed:
        section["recipe_changed"] = changed
    # A candidate the gate kept out was trained on this data too: training it again would
    # publish the same model (same seed) and be kept out again, every tick, until data arrives.
    latest = _latest_candidate(registry_dir, name, production)
    if latest is not None:
        version, latest_metadata = latest
        latest_print = ((latest_metadata.get("data") or {}).get("fingerprint") or {}).get("sha256")
        if latest_print == fingerprint.sha256 and _recipe_changes(latest_metadata, cfg) == []:
            return section, (f"data unchanged: fingerprint {fingerprint.sha256[:12]} and recipe equal "
                             f"v{version}'s, the last candidate, which stayed out of production "
                             "(SCHEDULE_FORCE=true or --force trains anyway)")
    return section, None


def _recipe_changes(metadata: dict | None, cfg: TrainConfig) -> list[str]:
    """The recipe fields in which ``cfg`` differs from the config a version recorded."""
    recipe, current = (metadata or {}).get("config") or {}, cfg.to_dict()
    return [key for key in sorted(recipe_fields()) if recipe.get(key) != current.get(key)]


def _latest_candidate(registry_dir: Path, name: str, production: str | None) -> tuple[str, dict] | None:
    """The newest published version and its metadata when it is newer than production (a
    candidate that was kept out, or one published by hand), else None."""
    versions = registry.list_versions(registry_dir, name)
    if not versions or (production is not None and int(versions[-1]) <= int(production)):
        return None
    try:
        return versions[-1], read_metadata(registry.model_dir(registry_dir, name) / versions[-1])
    except (registry.RegistryError, OSError) as exc:
        log.warning("v%s metadata is unreadable: %s", versions[-1], exc)
        return None


def _production_data(registry_dir: Path, name: str,
                     version: str | None) -> tuple[dict | None, dict | None]:
    """Production's metadata and dataset manifest, or None where unreadable (then the run
    trains: a broken production must never stop the run that can replace it)."""
    if version is None:
        return None, None
    version_dir = registry.model_dir(registry_dir, name) / version
    try:
        metadata = read_metadata(version_dir)
    except (registry.RegistryError, OSError) as exc:
        log.warning("production v%s metadata is unreadable: %s", version, exc)
        return None, None
    try:
        manifest = json.loads(registry.read_verified(version_dir, metadata, MANIFEST_FILE))
    except (FileNotFoundError, registry.RegistryError, ValueError):
        manifest = None
    return metadata, manifest
