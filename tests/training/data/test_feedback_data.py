"""The feedback store as training data: fixed sides, the dataset's input shape, labels by name,
what is skipped, and the data fingerprint that says whether anything changed."""

from pathlib import Path

import numpy as np
import pytest
import torch
from support.feedback import store_feedback, stripe_feedback
from support.images import encode, make_imagefolder, stripe_image
from support.training import tiny_train_config

from artifacts.feedback import label_dirname, label_from_dirname
from training.data.feedback import load_feedback, side_of
from training.data.splits import load_data

CLASSES = ["checks", "hstripes", "vstripes"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"), pattern="stripes",
                            splits={"train": 12, "test": 4})


def test_labels_that_are_not_directory_names_round_trip():
    for label in ["T-shirt/top", "..", ".", ".hidden", "a b", "50%", "Ünïcode/ñ", "Ankle boot"]:
        name = label_dirname(label)
        assert "/" not in name and not name.startswith(".") and name not in (".", "..")
        assert label_from_dirname(name) == label
    assert label_dirname("T-shirt/top") == "T-shirt%2Ftop"


def test_sides_are_fixed_by_content_whatever_else_is_in_the_store(tmp_path):
    paths = stripe_feedback(tmp_path / "fb", "hstripes", 60, pattern=0, seed=1)
    first = load_feedback(tmp_path / "fb", CLASSES, channels=1, height=16, width=16,
                          val_fraction=0.1, test_fraction=0.2)
    sides = {key: side for side, data in first.sides.items() for key in data.keys}
    assert len(sides) == 60 and set(sides.values()) == {"train", "val", "test"}
    stripe_feedback(tmp_path / "fb", "vstripes", 40, pattern=1, seed=2)  # the store grows
    paths[0].unlink()  # and loses one
    second = load_feedback(tmp_path / "fb", CLASSES, channels=1, height=16, width=16,
                           val_fraction=0.1, test_fraction=0.2)
    moved = [key for side, data in second.sides.items() for key in data.keys
             if key in sides and sides[key] != side]
    assert moved == [] and len(second) == 99
    assert all(side_of(key, val_fraction=0.1, test_fraction=0.2) == side for key, side in sides.items())


def test_samples_take_the_datasets_shape_and_odd_files_are_skipped(tmp_path):
    root = tmp_path / "fb"
    rgb_big = encode(stripe_image(1, np.random.default_rng(3), size=40)[..., None]
                     .repeat(3, axis=2))
    store_feedback(root, "vstripes", rgb_big)  # RGB 40x40 -> 1x16x16
    store_feedback(root, "giraffe", encode(stripe_image(0, np.random.default_rng(4))))
    store_feedback(root, "checks", b"not an image at all")
    edited = store_feedback(root, "checks", encode(stripe_image(2, np.random.default_rng(5))))
    edited.write_bytes(edited.read_bytes() + b"tampered")  # content no longer matches its name
    (root / "checks" / ".tmp-upload.png.tmp").write_bytes(b"half a file")  # an atomic write's temp
    (root / "feedback.jsonl").write_text("{}\n")
    data = load_feedback(root, CLASSES, channels=1, height=16, width=16, val_fraction=0.1, test_fraction=0.1)
    assert len(data) == 1 and data.manifest[0][1] == "vstripes"
    (image,) = [d.images for d in data.sides.values() if len(d)]
    assert image.shape == (1, 1, 16, 16) and image.dtype == torch.uint8
    assert sum(data.skipped.values()) == 3
    assert any("giraffe" in reason for reason in data.skipped)


def test_feedback_joins_every_split_and_changes_the_fingerprint(folder, tmp_path):
    options = dict(dataset="imagefolder", channels=1, image_size=16, test_fraction=0.25)
    base = load_data(tiny_train_config(folder, tmp_path, **options))
    root = tmp_path / "fb"
    stripe_feedback(root, "hstripes", 40, pattern=0, seed=8)
    cfg = tiny_train_config(folder, tmp_path, feedback_dir=str(root), **options)
    mixed = load_data(cfg)
    assert len(mixed.train) + len(mixed.val) + len(mixed.test) == \
        len(base.train) + len(base.val) + len(base.test) + 40
    assert "feedback" in mixed.test_sources() and "imagefolder" in mixed.test_sources()
    assert sum(mixed.counts["feedback"][split].get("hstripes", 0) for split in ("train", "val", "test")) == 40
    assert mixed.fingerprint.sha256 != base.fingerprint.sha256
    again = load_data(cfg)
    assert again.fingerprint == mixed.fingerprint  # same files, same fingerprint
    new = stripe_feedback(root, "checks", 3, pattern=2, seed=9)
    grown = load_data(cfg)
    assert grown.fingerprint.sha256 != mixed.fingerprint.sha256
    totals = {"feedback": 43}
    assert grown.fingerprint.new_samples(mixed.fingerprint.to_metadata(), mixed.fingerprint.manifest,
                                         totals)["feedback"] == len(new)
