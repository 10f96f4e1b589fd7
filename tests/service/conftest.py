"""Fixtures of the service tests: a tiny artifact trained by the training code, and the real
gunicorn server on a free loopback port, always stopped after its module."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import MODEL, Server, band_images, write_idx

from training.config import TrainConfig
from training.train import main as train_main


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory) -> Path:
    """A registry holding ``fmnist`` v1 (promoted): an MLP trained by ``training.train.main``
    on Fashion-MNIST-shaped synthetic idx files."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    data.mkdir()
    for prefix, count, seed in (("train", 400, 1), ("t10k", 100, 2)):
        images, labels = band_images(count, seed=seed)
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", labels)
    cfg = TrainConfig(
        dataset="fashion-mnist", data_dir=str(data), model="mlp", model_kwargs={"hidden": [32]},
        epochs=3, batch_size=32, optimizer="adam", lr=1e-2, precision="fp32", device="cpu",
        runs_dir=str(root / "runs"), registry=str(root / "registry"), run_name="run",
        progress=False, seed=0, name=MODEL, promote=True, threads=1,
    )
    result = train_main(cfg)
    assert result.version == "1"
    return root / "registry"


@pytest.fixture
def registry_copy(trained_registry: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the trained registry."""
    return Path(shutil.copytree(trained_registry, tmp_path / "registry"))


@pytest.fixture(scope="module")
def start_server(tmp_path_factory) -> Iterator:
    """Factory ``start_server(registry, **env) -> Server``; every server is stopped after the
    module, whatever happened."""
    servers: list[Server] = []

    def start(registry: Path, **env: str) -> Server:
        log_path = tmp_path_factory.mktemp("gunicorn") / "server.log"
        server = Server(registry, log_path, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
