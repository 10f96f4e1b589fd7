"""Dataset sources, each decoded once into uint8 tensors ``(N, C, H, W)`` plus int64 labels.

Batching, normalisation and augmentation then run on whole tensors (``training.data.batches``)
instead of a PIL image per sample per epoch, which is what makes training fast on a CPU.
"""

import gzip
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import datasets as tv_datasets

from artifacts.preprocess import InputSpec, image_to_uint8
from training.config import DATASETS  # the names the command line offers; load_raw knows each

log = logging.getLogger(__name__)

FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_LABELS = [str(d) for d in range(10)]
CIFAR10_LABELS = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
# Where Debian's `dataset-fashion-mnist` package installs the real data (the offline default).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The data is not on disk and could not be downloaded; the message says how to get it."""


@dataclass
class ImageTensors:
    """A labelled image set held in memory as uint8.

    ``keys`` name each sample stably (the sha256 of an ImageFolder file's content) where
    the source can grow, so that splits can follow files instead of positions; fixed sources
    (the MNIST family, CIFAR-10) have none. ``sources`` names where each sample came from
    (the dataset, or ``feedback``) once sources are mixed; None: all from the dataset."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    keys: list[str] | None = None
    sources: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.keys is not None and len(self.keys) != len(self.labels):
            raise ValueError(f"{len(self.keys)} keys but {len(self.labels)} labels")
        if self.sources is not None and len(self.sources) != len(self.labels):
            raise ValueError(f"{len(self.sources)} sources but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "ImageTensors":
        positions = indices.tolist()
        keys = None if self.keys is None else [self.keys[i] for i in positions]
        sources = None if self.sources is None else [self.sources[i] for i in positions]
        return ImageTensors(self.images[indices], self.labels[indices], keys, sources)

    def source_names(self, default: str) -> list[str]:
        """Where each sample came from (``default`` for a set that was never mixed)."""
        return self.sources if self.sources is not None else [default] * len(self)

    @staticmethod
    def mix(parts: dict[str, "ImageTensors"]) -> "ImageTensors":
        """The samples of several sources, in order, each remembering its source's name."""
        images = torch.cat([p.images for p in parts.values()])
        labels = torch.cat([p.labels for p in parts.values()])
        keyed = all(p.keys is not None for p in parts.values())
        keys = [k for p in parts.values() for k in p.keys] if keyed else None  # type: ignore[union-attr]
        sources = [s for name, p in parts.items() for s in p.source_names(name)]
        return ImageTensors(images, labels, keys, sources)


def key_fraction(key: str, *, seed: int | str) -> float:
    """Where ``key`` falls in [0, 1) under ``seed``: the first 8 bytes of a sha256, so the same
    on every machine and Python version (``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class RawDataset:
    """What a source yields: a train pool, optional given validation set, and the test set."""

    train: ImageTensors
    test: ImageTensors
    classes: list[str]
    val: ImageTensors | None = None
    # The files read (their hashes fingerprint the data); an ImageFolder's samples are keyed instead.
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------- idx files (MNIST family)

def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (plain or .gz), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(f"{path}: header promises {expected} bytes, file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_dir(data_dir: Path, torchvision_folder: str) -> Path | None:
    """The directory holding the four idx files: ``data_dir`` itself (Debian's layout) or
    torchvision's ``data_dir/<Folder>/raw``."""
    for directory in (data_dir, data_dir / torchvision_folder / "raw"):
        if all(_find_idx(directory, stem) for pair in IDX_FILES.values() for stem in pair):
            return directory
    return None


def load_idx_split(directory: Path, split: str) -> ImageTensors:
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(_find_idx(directory, images_stem))  # (N, H, W)
    labels = read_idx(_find_idx(directory, labels_stem))  # (N,)
    return ImageTensors(
        torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    )


def _download_idx(factory: Callable, data_dir: Path, name: str, hint: str) -> None:
    """Let torchvision download the dataset; offline, explain where the data can come from."""
    try:
        for train in (True, False):
            factory(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # URLError, HTTPError, RuntimeError ("Error downloading ...")
        raise DatasetNotFoundError(
            f"{name} was not found under {data_dir} and could not be downloaded ({exc}). {hint}"
        ) from exc


def load_mnist_family(name: str, data_dir: Path | None, *, download: bool) -> RawDataset:
    """Fashion-MNIST or MNIST from Debian's directory, torchvision's layout, or a download."""
    fashion = name == "fashion-mnist"
    folder, factory = ("FashionMNIST", tv_datasets.FashionMNIST) if fashion else ("MNIST", tv_datasets.MNIST)
    candidates = [Path(data_dir)] if data_dir else [Path("data")]
    if fashion and data_dir is None:
        candidates.insert(0, DEBIAN_FASHION_MNIST)
    hint = (
        "Offline, install the real data with `sudo apt-get install dataset-fashion-mnist` "
        f"(files in {DEBIAN_FASHION_MNIST}) or pass --data-dir to a directory with the four idx files."
        if fashion
        else "Online, add --download (torchvision fetches it); offline, pass --data-dir to a "
        "directory with the four MNIST idx files."
    )
    directory = next((d for d in map(lambda c: find_idx_dir(c, folder), candidates) if d), None)
    if directory is None:
        if not download:
            searched = ", ".join(str(c) for c in candidates)
            raise DatasetNotFoundError(f"{name} idx files not found in {searched}. {hint}")
        _download_idx(factory, candidates[-1], name, hint)
        directory = find_idx_dir(candidates[-1], folder)
    log.info("loading %s from %s", name, directory)
    labels = FASHION_MNIST_LABELS if fashion else MNIST_LABELS
    files = [_find_idx(directory, stem) for pair in IDX_FILES.values() for stem in pair]
    return RawDataset(load_idx_split(directory, "train"), load_idx_split(directory, "test"), labels,
                      files=files)


# ---------------------------------------------------------------- CIFAR-10

def load_cifar10(data_dir: Path | None, *, download: bool) -> RawDataset:
    root = Path(data_dir or "data")
    try:
        parts = [tv_datasets.CIFAR10(root=str(root), train=t, download=download) for t in (True, False)]
    except Exception as exc:
        raise DatasetNotFoundError(
            f"CIFAR-10 was not found under {root} ({exc}). Online, add --download; offline, copy "
            f"torchvision's cifar-10-batches-py folder into {root}."
        ) from exc

    def to_tensors(ds) -> ImageTensors:  # ds.data: (N, 32, 32, 3) uint8
        return ImageTensors(
            torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(ds.targets, dtype=torch.int64),
        )

    files = sorted(p for p in (root / tv_datasets.CIFAR10.base_folder).glob("*_batch*") if p.is_file())
    return RawDataset(to_tensors(parts[0]), to_tensors(parts[1]), CIFAR10_LABELS, files=files)


# ---------------------------------------------------------------- a user's ImageFolder

def _decode_folder(folder: Path, spec: InputSpec, classes: list[str] | None) -> tuple[ImageTensors, list[str]]:
    """Decode every image of ``folder/<class>/*`` once, through the service's own decode path."""
    dataset = tv_datasets.ImageFolder(str(folder), loader=lambda p: image_to_uint8(_open(p), spec=spec))
    if classes is not None and dataset.classes != classes:
        raise ValueError(
            f"{folder} has classes {dataset.classes}, but the train folder has {classes}"
        )
    images = torch.empty((len(dataset), spec.channels, spec.height, spec.width), dtype=torch.uint8)
    for i in range(len(dataset)):
        images[i], _ = dataset[i]
    labels = torch.tensor(dataset.targets, dtype=torch.int64)
    # A file's identity is its content: renamed or moved to another class, it keeps its split.
    keys = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path, _ in dataset.samples]
    return ImageTensors(images, labels, keys), dataset.classes


def _open(path: str) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).copy()  # honour camera rotation, close the file


def load_imagefolder(
    data_dir: Path | None, *, channels: int, image_size: int
) -> RawDataset:
    """A user's ``train/<class>/*.jpg`` with optional ``val/`` and ``test/`` next to it.

    Without ``test/`` a held-out test split is carved out of ``train/`` by the caller, by each
    file's content (the samples' ``keys``), so it stays put as the folder grows.
    Images are resized to ``image_size`` and converted to ``channels`` once, here.
    """
    if data_dir is None or not (Path(data_dir) / "train").is_dir():
        raise DatasetNotFoundError(
            f"imagefolder needs --data-dir DIR with DIR/train/<class>/<image files>; got {data_dir}"
        )
    root = Path(data_dir)
    spec = InputSpec(channels=channels, height=image_size, width=image_size,
                     mean=(0.0,) * channels, std=(1.0,) * channels)
    train, classes = _decode_folder(root / "train", spec, None)
    val = _decode_folder(root / "val", spec, classes)[0] if (root / "val").is_dir() else None
    test = _decode_folder(root / "test", spec, classes)[0] if (root / "test").is_dir() else None
    log.info("imagefolder %s: %d classes, %d train images", root, len(classes), len(train))
    return RawDataset(train=train, test=test, classes=classes, val=val)  # test may be None


def load_raw(name: str, data_dir: Path | None, *, download: bool, channels: int, image_size: int) -> RawDataset:
    if name in ("fashion-mnist", "mnist"):
        return load_mnist_family(name, data_dir, download=download)
    if name == "cifar10":
        return load_cifar10(data_dir, download=download)
    if name == "imagefolder":
        return load_imagefolder(data_dir, channels=channels, image_size=image_size)
    raise ValueError(f"Unknown dataset {name!r}. Valid datasets: {', '.join(DATASETS)}.")
