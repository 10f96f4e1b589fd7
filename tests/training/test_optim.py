import pytest
import torch

from training.config import OPTIMIZERS, SCHEDULERS, TrainConfig
from training.optim import build_optimizer, build_scheduler
from training.train import main


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_the_tiny_task(name, tiny_config):
    result = main(tiny_config(optimizer=name, lr=None, epochs=3, scheduler="none", publish=False))
    assert result.best_val_accuracy > 0.5  # 10 classes: chance is 0.1


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_steps_per_batch_and_ends_low(name):
    cfg = TrainConfig(optimizer="sgd", lr=0.1, scheduler=name, epochs=4, step_size=1, warmup_epochs=1)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        optimizer.step()
        if scheduler:
            scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    if name == "none":
        assert set(lrs) == {0.1}
    else:
        assert lrs[-1] < 0.01


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
