"""Fashion-MNIST-shaped idx files (the format of the MNIST family), made of band images."""

import gzip
from pathlib import Path

import numpy as np

from support.images import band_images


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an idx file; gzipped when ``path`` ends in ``.gz``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def make_idx_dir(directory: Path, *, train: int = 300, test: int = 100, classes: int = 10,
                 compress: bool = True, labels: str = "random") -> Path:
    """A fake MNIST-family directory in Debian's flat layout (four idx files) of 28x28 band
    images (:func:`support.images.band_images`)."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, targets = band_images(count, classes=classes, seed=seed, labels=labels)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", targets)
    return directory
