"""Fixtures of every test: one torch thread, fake Fashion-MNIST idx files, fast training
configs, and the trained test model the service and web tests serve. The helpers behind them
are in ``tests/support``."""

from pathlib import Path

import pytest
import torch
from support.idx import make_idx_dir
from support.service import MODEL
from support.training import tiny_train_config

from training.config import TrainConfig
from training.train import main as train_main


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


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory) -> Path:
    """A registry holding ``fmnist`` v1 (promoted), with its report, pictures and golden set: an
    MLP trained by ``training.train.main`` on Fashion-MNIST-shaped synthetic idx files, once per
    test session (the service and web tests serve it)."""
    root = tmp_path_factory.mktemp("trained")
    data = make_idx_dir(root / "data", train=400, test=100, labels="cycle")
    cfg = tiny_train_config(data, root, epochs=3, name=MODEL, promote=True, threads=1)
    result = train_main(cfg)
    assert result.version == "1"
    return root / "registry"
