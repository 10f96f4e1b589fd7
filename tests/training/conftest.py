"""Fixtures of the retraining-job tests: a tiny generated ImageFolder and a clean job environment,
for real training runs of about a second."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from schedule_support import GOOD, NAME


def _pattern(kind: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Three easy classes: horizontal stripes, vertical stripes, a checkerboard (plus noise)."""
    y, x = np.mgrid[0:size, 0:size]
    phase = int(rng.integers(0, 4))
    base = [((y + phase) // 2) % 2, ((x + phase) // 2) % 2, ((x // 2) + (y // 2) + phase) % 2][kind]
    noise = rng.normal(0, 0.15, (size, size))
    return (np.clip(base * 0.8 + 0.1 + noise, 0, 1) * 255).astype(np.uint8)


def make_imagefolder(root: Path, *, train_per_class: int = 24, test_per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in ("checks", "hstripes", "vstripes"):
            folder = root / split / label
            folder.mkdir(parents=True)
            order = {"hstripes": 0, "vstripes": 1, "checks": 2}[label]
            for i in range(count):
                Image.fromarray(_pattern(order, rng), mode="L").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"))


@pytest.fixture
def job_env(tmp_path, imagefolder, monkeypatch):
    """A clean job environment: the tiny data set, a tiny MLP, CPU fp32, one thread."""
    for key in list(os.environ):
        if key.startswith(("SCHEDULE_", "TRAIN_")) or key in ("MODEL_REGISTRY", "MODEL_NAME"):
            monkeypatch.delenv(key)
    env = {
        "MODEL_REGISTRY": str(tmp_path / "registry"), "MODEL_NAME": NAME,
        "SCHEDULE_RUNS_DIR": str(tmp_path / "runs"),
        "TRAIN_DATASET": "imagefolder", "TRAIN_DATA_DIR": str(imagefolder),
        "TRAIN_CHANNELS": "1", "TRAIN_IMAGE_SIZE": "16", "TRAIN_AUGMENT": "none",
        "TRAIN_MODEL": "mlp", "TRAIN_MODEL_KWARGS": '{"hidden": [32]}',
        "TRAIN_OPTIMIZER": "adam", "TRAIN_SCHEDULER": "none", "TRAIN_BATCH_SIZE": "16",
        "TRAIN_DEVICE": "cpu", "TRAIN_PRECISION": "fp32", "TRAIN_THREADS": "1", **GOOD,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def set_env(**overrides: str) -> None:
        for key, value in overrides.items():
            monkeypatch.setenv(key, value)

    set_env.registry = tmp_path / "registry"
    set_env.runs = tmp_path / "runs"
    set_env.env = env
    return set_env
