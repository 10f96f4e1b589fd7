"""Train, validation and test splits (``training.data.splits``): seeded, normalised by the
training split alone, and a test split that never takes an image production trained on."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from support.images import make_imagefolder

from training.config import TrainConfig
from training.data.sources import ImageTensors
from training.data.splits import load_data, split_holdout


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


def _pixels(split) -> set[bytes]:
    return {image.numpy().tobytes() for image in split.images}


def test_imagefolder_without_val_or_test_carves_both_from_train(tmp_path):
    data = load_data(_imagefolder_config(make_imagefolder(tmp_path / "ds")))
    assert data.classes == ["circle", "square", "stripe"]
    assert data.train.images.shape[1:] == (3, 12, 12)
    assert len(data.train) + len(data.val) + len(data.test) == 36


def test_imagefolder_uses_given_val_and_test_folders(tmp_path):
    root = make_imagefolder(tmp_path / "ds", splits={"train": 12, "val": 12, "test": 12})
    data = load_data(_imagefolder_config(root, channels=1))
    assert (len(data.train), len(data.val), len(data.test)) == (36, 36, 36)
    assert data.test.images.shape[1] == 1


def test_imagefolder_test_split_stays_fixed_when_an_image_is_added(tmp_path):
    # Production trained on the old train/val splits: none of them may become a test image.
    root = make_imagefolder(tmp_path / "ds", splits={"train": 40})
    cfg = _imagefolder_config(root)
    before = load_data(cfg)
    Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "train" / "circle" / "arrived.png")
    after = load_data(cfg)
    assert _pixels(before.test) <= _pixels(after.test)
    assert not _pixels(after.test) & (_pixels(before.train) | _pixels(before.val))
    assert len(after.train) + len(after.val) + len(after.test) == 121


def test_imagefolder_files_keep_their_split_when_renamed_or_moved_to_another_class(tmp_path):
    root = make_imagefolder(tmp_path / "ds", splits={"train": 40})
    cfg = _imagefolder_config(root)
    before = load_data(cfg)
    for index, path in enumerate(sorted((root / "train" / "circle").iterdir())[:10]):
        path.rename(root / "train" / "square" / f"relabelled-{index}.png")  # a label fix
    after = load_data(cfg)
    assert _pixels(after.test) == _pixels(before.test)


def _keyed(names: list[str]) -> ImageTensors:
    n = len(names)
    return ImageTensors(torch.zeros((n, 1, 2, 2), dtype=torch.uint8), torch.arange(n), keys=names)


def test_keyed_holdout_depends_on_each_key_alone():
    names = [f"c/{i}.png" for i in range(200)]
    _, held = split_holdout(_keyed(names), 0.1, seed=1)
    _, held_grown = split_holdout(_keyed(names[:150] + ["c/new.png"] + names[150:]), 0.1, seed=1)
    assert set(held.keys) <= set(held_grown.keys) <= set(held.keys) | {"c/new.png"}
    assert 5 <= len(held) <= 40  # about 10%


def test_keyed_holdout_keeps_one_sample_on_each_side():
    for fraction in (0.01, 0.99):
        kept, held = split_holdout(_keyed(["a.png", "b.png"]), fraction, seed=0)
        assert (len(kept), len(held)) == (1, 1)
