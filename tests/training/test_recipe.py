"""The recipe's regularisers: the weight average (--ema), mixup / cutmix, random erasing and
test-time augmentation (--tta), each as it changes what gets trained, chosen and published."""

import json
from pathlib import Path

import pytest
import torch
from test_checkpoints import _run_epochs

import models
from artifacts import registry
from artifacts.errors import ArtifactValidationError
from artifacts.golden import golden_probabilities
from artifacts.metadata import METADATA_FILE
from models.tta import FlipAveraged
from training.checkpoint import load_checkpoint
from training.config import TEST_TIME_AUGMENTATIONS, TrainConfig
from training.data.batches import random_erasing
from training.data.mixing import build_mixing
from training.train import main

EVERYTHING = dict(epochs=3, model="cnn", model_kwargs={"channels": [4, 8]}, batch_size=16,
                  optimizer="sgd", lr=0.05, scheduler="onecycle", augment="crop-flip", ema=True,
                  ema_steps=2, mixup_alpha=0.2, cutmix_alpha=1.0, random_erasing=0.5, tta="hflip",
                  publish=False)


def test_resume_with_every_regulariser_on_continues_bit_identically(tiny_config):
    """EMA, mixup/cutmix (torch's global generator), erasing (the loader's) and TTA evaluation:
    3 epochs straight == 2 epochs, a kill, and a resume."""
    straight = main(tiny_config(run_name="straight", **EVERYTHING))
    interrupted = tiny_config(run_name="interrupted", **EVERYTHING)
    _run_epochs(interrupted, 2)
    resumed = main(tiny_config(resume=str(Path(interrupted.runs_dir) / "interrupted" / "checkpoints" / "last.pt"),
                               **EVERYTHING))
    a = torch.load(straight.run_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model_state_dict", "ema_state_dict"):
        assert a[part].keys() == b[part].keys()
        for key, tensor in a[part].items():
            assert torch.equal(tensor, b[part][key]), (part, key)
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]


def test_the_weight_average_is_what_gets_published(tiny_config):
    cfg = tiny_config(**{**EVERYTHING, "tta": "none", "publish": True})
    result = main(cfg)
    best = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    averaged = {k.removeprefix("module."): v for k, v in best["ema_state_dict"].items() if k != "n_averaged"}
    published = torch.load(Path(cfg.registry) / cfg.model_name / result.version / registry.WEIGHTS_FILE,
                           weights_only=True)
    assert published.keys() == averaged.keys()
    for key, tensor in published.items():
        assert torch.equal(tensor, averaged[key].cpu()), key
    assert any(not torch.equal(tensor, best["model_state_dict"][key].cpu()) for key, tensor in published.items()), \
        "the average equals the raw weights: it was never updated"


@pytest.fixture(scope="module")
def tta_version(tmp_path_factory):
    """A cnn published with ``--tta hflip``: (registry, config, result)."""
    from support.idx import make_idx_dir
    from support.training import tiny_train_config

    root = tmp_path_factory.mktemp("tta")
    cfg = tiny_train_config(make_idx_dir(root / "data"), root,
                            **{**EVERYTHING, "publish": True, "mixup_alpha": 0.0, "cutmix_alpha": 0.0})
    return Path(cfg.registry), cfg, main(cfg)


def test_tta_is_recorded_and_every_load_evaluates_with_it(tta_version):
    directory, cfg, result = tta_version
    artifact = registry.load_artifact(directory, cfg.model_name, result.version)
    assert artifact.metadata["test_time_augmentation"] == "hflip"
    assert isinstance(artifact.model, FlipAveraged)
    images = artifact.golden.images
    bare = artifact.model.model
    expected = (golden_probabilities(bare, artifact.input_spec, images)
                + golden_probabilities(bare, artifact.input_spec, images.flip(-1))) / 2
    served = golden_probabilities(artifact.model, artifact.input_spec, images)
    torch.testing.assert_close(served, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(served, golden_probabilities(bare, artifact.input_spec, images), atol=1e-4)


def test_a_tta_field_edited_by_hand_is_caught(tta_version, tmp_path):
    """metadata.json is not hashed, but the golden set, made with TTA, no longer matches
    without it; a value the code does not know is refused by name."""
    import shutil

    directory, cfg, result = tta_version
    copy = tmp_path / "registry"
    shutil.copytree(directory, copy)
    path = copy / cfg.model_name / result.version / METADATA_FILE
    metadata = json.loads(path.read_text())
    for value, message in (("none", "golden"), ("vflip", "test_time_augmentation 'vflip'")):
        path.write_text(json.dumps({**metadata, "test_time_augmentation": value}))
        with pytest.raises(ArtifactValidationError, match=message):
            registry.load_artifact(copy, cfg.model_name, result.version)


def test_flip_averaged_outputs_log_probabilities_of_the_mean():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.randn(5, 1, 3, 4)
    mean = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(FlipAveraged(net)(x).softmax(1), mean)
    torch.testing.assert_close(FlipAveraged(net)(x).exp().sum(1), torch.ones(5))
    assert models.TEST_TIME_AUGMENTATIONS == TEST_TIME_AUGMENTATIONS  # the CLI's choices


def test_random_erasing_draws_one_rectangle_per_image():
    batch = torch.full((64, 1, 28, 28), 7, dtype=torch.uint8)
    erased = random_erasing(batch, 1.0, torch.Generator().manual_seed(0))
    changed = erased != batch  # (N, 1, H, W)
    per_image = changed.flatten(1).sum(1)
    assert (per_image > 0).all() and (per_image < 28 * 28 * 0.5).all()
    assert len({tuple(c.nonzero()[0].tolist()) for c in changed}) > 32, "the same rectangle for every image"
    for image in changed[:, 0]:  # the changed pixels lie in one rectangle
        rows, cols = image.any(1).nonzero().flatten(), image.any(0).nonzero().flatten()
        box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.75  # noise hits 7 itself one time in 256
    assert torch.equal(random_erasing(batch, 0.0, torch.Generator().manual_seed(0)), batch)
    again = random_erasing(batch, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(erased, again)


def test_mixing_gives_label_distributions(tiny_config):
    assert build_mixing(tiny_config(), 10) is None
    mix = build_mixing(tiny_config(mixup_alpha=0.2, cutmix_alpha=1.0), 10)
    images, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    mixed, target = mix(images, labels)
    assert mixed.shape == images.shape and target.shape == (8, 10)
    torch.testing.assert_close(target.sum(1), torch.ones(8))


@pytest.mark.parametrize("bad", [dict(random_erasing=1.5), dict(ema_decay=1.0), dict(mixup_alpha=-1),
                                 dict(ema_steps=0), dict(tta="vflip")])
def test_invalid_regulariser_values_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def _cli_config(*options: str) -> TrainConfig:
    from training.cli import build_parser, resolve_train_config

    argv = ["train", *options]
    return resolve_train_config(build_parser().parse_args(argv), argv[1:])


def test_a_named_recipe_lies_under_the_options_given():
    from training.recipes import RECIPES

    long = _cli_config("--recipe", "long")
    assert all(getattr(long, name) == value for name, value in RECIPES["long"].items())
    cut = _cli_config("--recipe", "long", "--epochs", "3", "--no-ema")
    assert (cut.epochs, cut.ema, cut.model_kwargs) == (3, False, RECIPES["long"]["model_kwargs"])
    assert _cli_config() == TrainConfig()  # standard is TrainConfig's own defaults
    with pytest.raises(ValueError, match="MNIST takes no flips"):
        _cli_config("--recipe", "long", "--dataset", "mnist")
    other = _cli_config("--recipe", "long", "--model", "mlp")  # the recipe's width is wide_cnn's
    assert (other.model, other.model_kwargs, other.epochs) == ("mlp", {}, RECIPES["long"]["epochs"])


def test_the_retraining_job_takes_a_recipe_from_the_environment(monkeypatch):
    from training.recipes import RECIPES
    from training.retrain.settings import load_recipe

    monkeypatch.setenv("TRAIN_RECIPE", "long")
    monkeypatch.setenv("TRAIN_EPOCHS", "4")
    recipe = load_recipe()
    assert (recipe["recipe"], recipe["epochs"], recipe["tta"]) == ("long", 4, RECIPES["long"]["tta"])
    monkeypatch.setenv("TRAIN_RECIPE", "fastest")
    with pytest.raises(ValueError, match="recipe"):
        load_recipe()


def test_resuming_a_checkpoint_older_than_an_option_counts_it_at_its_default():
    from training.config import check_resume_config

    saved = TrainConfig(epochs=3, scheduler="none").to_dict()
    for option in ("ema", "tta", "mixup_alpha", "recipe"):  # a checkpoint from before they existed
        del saved[option]
    check_resume_config(saved, TrainConfig(epochs=3, scheduler="none", resume="last.pt"))  # same run
    with pytest.raises(ValueError, match="--ema False -> True"):
        check_resume_config(saved, TrainConfig(epochs=3, scheduler="none", ema=True, resume="last.pt"))
    with pytest.raises(ValueError, match="without --ema"):  # the average is laid out over the run
        check_resume_config({**saved, "ema": True}, TrainConfig(epochs=5, scheduler="none", ema=True,
                                                                resume="last.pt"))
