"""What the retraining-job tests share: the model name, a good and a bad recipe, the job's
environment, and readers of what a run leaves in the registry."""

import json
from pathlib import Path

from artifacts import registry

NAME = "toy"
GOOD = {"TRAIN_LR": "0.01", "TRAIN_EPOCHS": "3"}
BAD = {"TRAIN_LR": "1e-9", "TRAIN_EPOCHS": "1"}  # barely moves from its random initialisation


def job_environment(registry_dir: Path, runs_dir: Path, data_dir: Path) -> dict[str, str]:
    """The variables of a job that trains a tiny MLP on a stripes ImageFolder
    (``support.images.make_imagefolder(pattern="stripes")``) in about a second: CPU, fp32, one
    thread, the GOOD recipe. Forced (``SCHEDULE_FORCE``): these tests run the job again and
    again on the same data; the skip of unchanged data has tests of its own."""
    return {
        "MODEL_REGISTRY": str(registry_dir), "MODEL_NAME": NAME,
        "SCHEDULE_RUNS_DIR": str(runs_dir),
        "TRAIN_DATASET": "imagefolder", "TRAIN_DATA_DIR": str(data_dir),
        "TRAIN_CHANNELS": "1", "TRAIN_IMAGE_SIZE": "16", "TRAIN_AUGMENT": "none",
        "TRAIN_MODEL": "mlp", "TRAIN_MODEL_KWARGS": '{"hidden": [32]}',
        "TRAIN_OPTIMIZER": "adam", "TRAIN_SCHEDULER": "none", "TRAIN_BATCH_SIZE": "16",
        "TRAIN_DEVICE": "cpu", "TRAIN_PRECISION": "fp32", "TRAIN_THREADS": "1", **GOOD,
        "SCHEDULE_FORCE": "true",
    }


def reports(registry_dir: Path) -> list[dict]:
    folder = registry_dir / NAME / "reports"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def production(registry_dir: Path) -> str | None:
    return registry.read_production(registry_dir, NAME)
