"""Helpers of the retraining-job tests (``test_schedule_*.py``): the model name, the two recipes,
and readers of what a run leaves in the registry."""

import json
from pathlib import Path

from artifacts import registry

REPO = Path(__file__).resolve().parents[2]
NAME = "toy"
GOOD = {"TRAIN_LR": "0.01", "TRAIN_EPOCHS": "3"}
BAD = {"TRAIN_LR": "1e-9", "TRAIN_EPOCHS": "1"}  # barely moves from its random initialisation


def reports(registry_dir: Path) -> list[dict]:
    folder = registry_dir / NAME / "reports"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def production(registry_dir: Path) -> str | None:
    return registry.read_production(registry_dir, NAME)
