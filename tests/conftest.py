"""Shared fixtures: small, learnable image data generated on the fly (no real dataset needed)."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.config import TrainConfig


def synthetic_images(count: int, *, classes: int, size: int = 28, channels: int = 1, seed: int = 0):
    """uint8 images (N, H, W[, C]) whose class is a bright horizontal band's position, plus
    noise: easy enough that a few epochs learn it, varied enough that accuracy means something."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=count)
    images = rng.integers(0, 60, size=(count, size, size, channels), dtype=np.int64)
    band = max(1, size // classes)
    for i, label in enumerate(labels):
        images[i, label * band : (label + 1) * band, :, :] += 150
    images = np.clip(images, 0, 255).astype(np.uint8)
    return (images[..., 0] if channels == 1 else images), labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def make_idx_dir(directory: Path, *, train: int = 300, test: int = 100, classes: int = 10,
                 compress: bool = True) -> Path:
    """A fake MNIST-family directory in Debian's flat layout (four idx files)."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = synthetic_images(count, classes=classes, seed=seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress=compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=compress)
    return directory


def make_imagefolder(root: Path, *, classes=("circle", "square", "stripe"), per_class: int = 12,
                     splits=("train",), size: int = 16) -> Path:
    """A user's ImageFolder: root/<split>/<class>/<n>.png (RGB PNGs of different sizes)."""
    for s, split in enumerate(splits):
        images, labels = synthetic_images(per_class * len(classes), classes=len(classes), size=size,
                                          channels=3, seed=10 + s)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).resize((size + i % 3, size)).save(folder / f"{i}.png")
    for split in splits:  # every class needs at least one image in every split
        for name in classes:
            folder = root / split / name
            if not folder.exists() or not any(folder.iterdir()):
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (size, size)).save(folder / "filler.png")
    return root


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
        values = dict(
            dataset="fashion-mnist", data_dir=str(idx_dir), model="mlp", model_kwargs={"hidden": [32]},
            epochs=2, batch_size=32, optimizer="adam", lr=1e-2, precision="fp32", device="cpu",
            runs_dir=str(tmp_path / "runs"), registry=str(tmp_path / "registry"), run_name="run",
            progress=False, seed=0,
        )
        values.update(overrides)
        return TrainConfig(**values)

    return factory
