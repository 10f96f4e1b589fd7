"""Is there anything new to learn? The data a run would train on, against production's and
against the last candidate's.

A scheduled run first loads its data (the same splits it then trains on) and compares the
fingerprint (:mod:`training.data.fingerprint`) and the recipe with what production recorded.
Equal means the run would repeat production's training, or that of the candidate the last
run judged and kept out: it is skipped, with the reason in the
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
from training.config import TrainConfig, with_defaults
from training.data.fingerprint import MANIFEST_FILE
from training.data.splits import DataSplits
from training.retrain.settings import recipe_fields

log = logging.getLogger(__name__)


def describe_data(registry_dir: Path, name: str, production: str | None, cfg: TrainConfig,
                  data: DataSplits, kept_out: str | None = None) -> tuple[dict[str, Any], str | None]:
    """(the report's ``data`` section, why training would be pointless or None).

    ``kept_out``: the candidate the last run judged against this production and kept out,
    if any (:func:`last_kept_out`)."""
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
    # The candidate the last run kept out was trained on this data too: training it again would
    # publish the same model (same seed) and keep it out again, every tick, until data arrives.
    candidate = _metadata(registry_dir, name, kept_out) if kept_out else None
    if candidate is not None:
        candidate_print = ((candidate.get("data") or {}).get("fingerprint") or {}).get("sha256")
        if candidate_print == fingerprint.sha256 and _recipe_changes(candidate, cfg) == []:
            return section, (f"data unchanged: fingerprint {fingerprint.sha256[:12]} and recipe equal "
                             f"v{kept_out}'s, the candidate the last run kept out of production "
                             "(SCHEDULE_FORCE=true or --force trains anyway)")
    return section, None


def last_kept_out(reports_dir: Path, production: str | None) -> str | None:
    """The candidate version of the newest run that trained (its report in ``reports_dir``),
    when that run judged it against ``production`` (still production) and kept it out; None
    otherwise. A run that failed, was interrupted or found production changed under it judged
    nothing."""
    if production is None:
        return None
    for path in sorted(Path(reports_dir).glob("*.json"), reverse=True):  # run ids sort by time
        try:
            last = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if last.get("status") == "skipped":
            continue
        sides = last.get("production") or {}
        if last.get("status") == "kept" and sides.get("version_before") == sides.get("version_after") == production:
            return (last.get("candidate") or {}).get("version")
        return None
    return None


def _recipe_changes(metadata: dict | None, cfg: TrainConfig) -> list[str]:
    """The recipe fields in which ``cfg`` differs from the config a version recorded. A field
    the version predates counts as its default (a new option, off by default, changes nothing
    the old version was trained with)."""
    recipe, current = with_defaults((metadata or {}).get("config") or {}), cfg.to_dict()
    return [key for key in sorted(recipe_fields()) if recipe.get(key) != current.get(key)]


def _metadata(registry_dir: Path, name: str, version: str) -> dict | None:
    try:
        return read_metadata(registry.model_dir(registry_dir, name) / version)
    except (registry.RegistryError, OSError) as exc:
        log.warning("v%s metadata is unreadable: %s", version, exc)
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
