"""Fixtures of the retraining-job tests: a tiny stripes ImageFolder and a clean job environment,
for real training runs of about a second. (Here rather than in retrain/ while
test_schedule_settings.py and test_schedule_timing.py live in this folder.)"""

import os
from pathlib import Path

import pytest
from support.images import make_imagefolder
from support.retrain import job_environment


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"), pattern="stripes",
                            splits={"train": 24, "test": 10})


@pytest.fixture
def job_env(tmp_path, imagefolder, monkeypatch):
    """A clean job environment (``support.retrain.job_environment``); call it with variables
    to set more."""
    for key in list(os.environ):
        if key.startswith(("SCHEDULE_", "TRAIN_")) or key in ("MODEL_REGISTRY", "MODEL_NAME"):
            monkeypatch.delenv(key)
    env = job_environment(tmp_path / "registry", tmp_path / "runs", imagefolder)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def set_env(**overrides: str) -> None:
        for key, value in overrides.items():
            monkeypatch.setenv(key, value)

    set_env.registry = tmp_path / "registry"
    set_env.runs = tmp_path / "runs"
    set_env.env = env
    return set_env
