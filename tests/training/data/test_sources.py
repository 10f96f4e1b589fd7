from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import make_idx_dir, make_imagefolder
from training.config import TrainConfig
from training.data.sources import DatasetNotFoundError, load_mnist_family, read_idx
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


def test_split_is_seeded_and_test_split_untouched(tiny_config):
    first, again = load_data(tiny_config(seed=3)), load_data(tiny_config(seed=3))
    other = load_data(tiny_config(seed=4))
    assert torch.equal(first.val.labels, again.val.labels)
    assert torch.equal(first.train.images, again.train.images)
    assert not torch.equal(first.val.images, other.val.images)
    assert torch.equal(first.test.images, other.test.images)  # the test split never moves
    assert (len(first.train), len(first.val), len(first.test)) == (270, 30, 100)


def test_normalisation_statistics_come_from_the_training_split(tiny_config):
    data = load_data(tiny_config())
    expected = data.train.images.double().div(255)
    assert data.input_spec.mean[0] == pytest.approx(expected.mean().item(), abs=1e-4)
    assert data.input_spec.std[0] == pytest.approx(expected.std().item(), abs=1e-4)


def _imagefolder_config(root: Path, **overrides) -> TrainConfig:
    values = {"dataset": "imagefolder", "data_dir": str(root), "image_size": 12, "channels": 3}
    return TrainConfig(**{**values, **overrides})


def test_imagefolder_without_val_or_test_carves_both_from_train(tmp_path):
    data = load_data(_imagefolder_config(make_imagefolder(tmp_path / "ds")))
    assert data.classes == ["circle", "square", "stripe"]
    assert data.train.images.shape[1:] == (3, 12, 12)
    assert len(data.train) + len(data.val) + len(data.test) == 36


def _pixels(split) -> set[bytes]:
    return {image.numpy().tobytes() for image in split.images}


def test_imagefolder_test_split_stays_fixed_when_an_image_is_added(tmp_path):
    # Production trained on the old train/val splits: none of them may become a test image.
    root = make_imagefolder(tmp_path / "ds", per_class=40)
    cfg = _imagefolder_config(root)
    before = load_data(cfg)
    Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "train" / "circle" / "arrived.png")
    after = load_data(cfg)
    assert _pixels(before.test) <= _pixels(after.test)
    assert not _pixels(after.test) & (_pixels(before.train) | _pixels(before.val))
    assert len(after.train) + len(after.val) + len(after.test) == 121


def test_imagefolder_files_keep_their_split_when_renamed_or_moved_to_another_class(tmp_path):
    root = make_imagefolder(tmp_path / "ds", per_class=40)
    cfg = _imagefolder_config(root)
    before = load_data(cfg)
    for index, path in enumerate(sorted((root / "train" / "circle").iterdir())[:10]):
        path.rename(root / "train" / "square" / f"relabelled-{index}.png")  # a label fix
    after = load_data(cfg)
    assert _pixels(after.test) == _pixels(before.test)


def test_imagefolder_uses_given_val_and_test_folders(tmp_path):
    root = make_imagefolder(tmp_path / "ds", splits=("train", "val", "test"))
    data = load_data(_imagefolder_config(root, channels=1))
    assert (len(data.train), len(data.val), len(data.test)) == (36, 36, 36)
    assert data.test.images.shape[1] == 1


def test_imagefolder_with_mismatched_classes_is_refused(tmp_path):
    root = make_imagefolder(tmp_path / "ds", splits=("train", "val"))
    (root / "val" / "square").rename(root / "val" / "triangle")
    with pytest.raises(ValueError, match="classes"):
        load_data(_imagefolder_config(root))


def test_cifar10_missing_offline_says_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
