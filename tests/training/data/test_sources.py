"""Where images come from (``training.data.sources``): idx files in either layout, an
ImageFolder, CIFAR-10, and what a user is told when they are missing or broken."""

import pytest
import torch
from support.idx import make_idx_dir
from support.images import make_imagefolder

from training.config import TrainConfig
from training.data.sources import DatasetNotFoundError, load_imagefolder, load_mnist_family, read_idx
from training.data.splits import load_data


def test_debian_layout_of_gzipped_idx_files_loads(idx_dir):
    raw = load_mnist_family("fashion-mnist", idx_dir, download=False)
    assert raw.train.images.shape == (300, 1, 28, 28) and raw.train.images.dtype == torch.uint8
    assert raw.test.labels.shape == (100,) and raw.test.labels.dtype == torch.int64
    assert raw.classes[9] == "Ankle boot"


def test_torchvision_layout_of_plain_idx_files_loads(tmp_path):
    make_idx_dir(tmp_path / "FashionMNIST" / "raw", compress=False)
    raw = load_mnist_family("fashion-mnist", tmp_path, download=False)
    assert len(raw.train) == 300


def test_missing_data_offline_explains_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_mnist_family("fashion-mnist", tmp_path / "nothing", download=False)


def test_truncated_idx_file_is_reported(tmp_path):
    directory = make_idx_dir(tmp_path / "d", compress=False)
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="header promises"):
        read_idx(path)


def test_imagefolder_with_mismatched_classes_is_refused(tmp_path):
    root = make_imagefolder(tmp_path / "ds", splits={"train": 12, "val": 12})
    (root / "val" / "square").rename(root / "val" / "triangle")
    with pytest.raises(ValueError, match="classes"):
        load_imagefolder(root, channels=3, image_size=12)


def test_cifar10_missing_offline_says_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
