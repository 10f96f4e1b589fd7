"""The export tests' registry: one small trained registry for the whole folder; the tests that
change it work on a copy."""

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support import REPO
from support.exports import NAME, run, tree
from support.idx import make_idx_dir
from support.images import band_images
from support.training import tiny_train_config

from artifacts import registry
from training.train import main as train_main


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """A registry of ``fm``: 1 (production), 2, and 3 published with ``--tta hflip``; a CNN of
    four and eight channels (convolutions, BatchNorm, pooling) trained a second on band images."""
    root = tmp_path_factory.mktemp("export")
    data = make_idx_dir(root / "data", train=200, test=60, labels="cycle")
    kwargs = {"model": "cnn", "model_kwargs": {"channels": [4, 8]}, "epochs": 3,
              "lr": 3e-2, "name": NAME, "threads": 1}
    for overrides in ({"promote": True}, {"seed": 1}, {"tta": "hflip"}):
        train_main(tiny_train_config(data, root, **kwargs, **overrides))
    assert registry.list_versions(root / "registry", NAME) == ["1", "2", "3"]
    return root / "registry"


@pytest.fixture(scope="session")
def exported(base, tmp_path_factory) -> SimpleNamespace:
    """A copy of ``base`` after ``python -m training export`` (every format of production),
    with the registry's versions hashed before and after."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)
    reg = tmp_path_factory.mktemp("exported") / "registry"
    shutil.copytree(base, reg)
    before = tree(registry.model_dir(reg, NAME))
    proc = run([sys.executable, "-m", "training", "export", "--registry", str(reg), "--name", NAME], REPO)
    directory = registry.exports_dir(reg, NAME, "1")
    after = {k: v for k, v in tree(registry.model_dir(reg, NAME)).items() if not k.startswith("exports")}
    return SimpleNamespace(registry=reg, proc=proc, directory=directory, before=before, after=after)


@pytest.fixture
def fresh(base, tmp_path) -> Path:
    shutil.copytree(base, tmp_path / "registry")
    return tmp_path / "registry"


@pytest.fixture
def exported_copy(exported, tmp_path) -> Path:
    assert exported.proc.returncode == 0, exported.proc.stderr
    shutil.copytree(exported.registry, tmp_path / "registry")
    return tmp_path / "registry"


@pytest.fixture(scope="session")
def held_out() -> np.ndarray:
    """21 uint8 ``(1, 28, 28)`` band images neither training nor the golden set saw."""
    images, _ = band_images(21, seed=99)
    return images[:, None]

