"""Fixtures of every test: one torch thread, fake Fashion-MNIST idx files, fast training
configs. The helpers behind them are in ``tests/support``."""

from pathlib import Path

import pytest
import torch
from support.idx import make_idx_dir
from support.training import tiny_train_config

from training.config import TrainConfig


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests share two cores with each other; one intra-op thread keeps them predictable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "fmnist")


@pytest.fixture
def tiny_config(tmp_path: Path, idx_dir: Path):
    """A factory of fast TrainConfigs on the fake idx data (MLP, fp32, no progress bar)."""

    def factory(**overrides) -> TrainConfig:
        return tiny_train_config(idx_dir, tmp_path, **overrides)

    return factory
