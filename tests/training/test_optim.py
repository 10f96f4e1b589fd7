"""Optimizers and learning-rate schedules (``training.optim``), by name."""

import math

import pytest
import torch

from training.config import OPTIMIZERS, SCHEDULERS, TrainConfig
from training.optim import build_optimizer, build_scheduler
from training.train import main


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_the_tiny_task(name, tiny_config):
    result = main(tiny_config(optimizer=name, lr=None, epochs=3, scheduler="none", publish=False))
    assert result.best_val_accuracy > 0.5  # 10 classes: chance is 0.1


def _cosine(start: float, end: float, fraction: float) -> float:
    """From ``start`` to ``end`` along half a cosine, ``fraction`` of the way."""
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def expected_schedule(name: str, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` optimizer steps, written out by hand for
    lr 0.1, 4 epochs of 10 steps, 1 warm-up epoch, decay by gamma 0.5 every 2 epochs."""
    lr, per_epoch, total = 0.1, 10, 40
    if name == "none":
        return [lr] * steps
    if name == "step":
        return [lr * 0.5 ** (t // (2 * per_epoch)) for t in range(steps)]
    if name == "cosine":  # a linear warm-up from lr/1000, then a cosine to 0 over the rest
        return [lr * (1e-3 + (1 - 1e-3) * t / per_epoch) if t < per_epoch
                else _cosine(lr, 0.0, (t - per_epoch) / (total - per_epoch)) for t in range(steps)]
    if name == "onecycle":  # up from lr/25 for the first quarter, then down to lr/25/1e4
        peak = int(0.25 * total) - 1
        return [_cosine(lr / 25, lr, t / peak) if t <= peak
                else _cosine(lr, lr / 25 / 1e4, (t - peak) / (total - 1 - peak))
                for t in range(steps)]
    raise AssertionError(name)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_follows_its_curve_step_by_step(name):
    """Laid out in optimizer steps (10 per epoch here), not epochs: every step's rate is the
    schedule's, from the first step to the last."""
    cfg = TrainConfig(optimizer="sgd", lr=0.1, scheduler=name, epochs=4, step_size=2, gamma=0.5,
                      warmup_epochs=1)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])  # the rate this step trains with
        optimizer.step()
        if scheduler:
            scheduler.step()
    assert lrs == pytest.approx(expected_schedule(name, 40), rel=1e-6, abs=1e-12)


def test_training_steps_the_schedule_once_per_batch(tiny_config):
    """The training loop steps the schedule after every batch: 270 training images in batches
    of 32 are 9 steps an epoch, so the rate halves after each epoch (step_size 1 epoch)."""
    result = main(tiny_config(epochs=3, optimizer="sgd", lr=0.1, scheduler="step", step_size=1,
                              gamma=0.5, publish=False))
    history = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)["history"]
    assert [record["lr"] for record in history] == pytest.approx([0.05, 0.025, 0.0125])


def test_sgd_options_reach_the_optimizer():
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)
    group = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.8, True, 1e-3)


@pytest.mark.parametrize("field,value", [("optimizer", "adamax"), ("scheduler", "poly"), ("model", "vgg")])
def test_unknown_names_fail_listing_valid_choices(field, value):
    with pytest.raises(ValueError, match="Valid"):
        TrainConfig(**{field: value})


def test_freeze_backbone_trains_the_head_only_and_keeps_bn_statistics(tmp_path):
    import models
    from training.optim import trainable_parameters

    model = models.build_model("resnet18", num_classes=3, in_channels=1, image_size=(16, 16))
    params = trainable_parameters(model, head="fc", freeze_backbone=True, arch_name="resnet18")
    assert {id(p) for p in params} == {id(p) for p in model.fc.parameters()}
    before = model.bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 1, 16, 16) * 5 + 3)
    assert torch.equal(model.bn1.running_mean, before)


def test_freeze_backbone_on_a_model_without_head_is_refused():
    import models
    from training.optim import trainable_parameters

    model = models.build_model("mlp", num_classes=3, in_channels=1, image_size=(8, 8))
    with pytest.raises(ValueError, match="separate head"):
        trainable_parameters(model, head="", freeze_backbone=True, arch_name="mlp")
