"""Optimizers and learning-rate schedules by name (names and defaults in ``training.config``)."""

import torch
from torch import nn
from torch.optim import lr_scheduler

from training.config import OPTIMIZERS, SCHEDULERS, TrainConfig

ONECYCLE_RISE = 0.25  # share of the run over which one-cycle raises the learning rate


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    lr, wd = cfg.resolved_lr, cfg.weight_decay
    name = cfg.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    raise ValueError(f"Invalid optimizer {name!r}. Valid optimizers: {', '.join(OPTIMIZERS)}.")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> lr_scheduler.LRScheduler | None:
    """A scheduler stepped once per optimizer step (not per epoch), so warm-up and one-cycle
    are smooth; ``step`` decays every ``step_size`` epochs all the same."""
    total = cfg.epochs * steps_per_epoch
    name = cfg.scheduler
    if name == "none":
        return None
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
    if name == "cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        if warmup <= 0:
            return cosine
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
        return lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.resolved_lr, total_steps=total,
                                       pct_start=ONECYCLE_RISE)
    raise ValueError(f"Invalid scheduler {name!r}. Valid schedulers: {', '.join(SCHEDULERS)}.")


def warmup_epochs(cfg: TrainConfig) -> float:
    """How long the schedule's learning rate rises, in epochs (the EMA restarts until then)."""
    if cfg.scheduler == "cosine":
        return cfg.warmup_epochs
    if cfg.scheduler == "onecycle":
        return ONECYCLE_RISE * cfg.epochs
    return 0.0


def trainable_parameters(model: nn.Module, *, head: str, freeze_backbone: bool, arch_name: str):
    """All parameters, or only the classifier head's under ``--freeze-backbone``.

    Frozen BatchNorm layers keep their running statistics (momentum 0): train mode still
    normalises with batch statistics, as the seeds' ``requires_grad=False`` recipe did, but
    evaluation keeps using the pretrained ones."""
    if not freeze_backbone:
        return [p for p in model.parameters() if p.requires_grad]
    if not head:
        raise ValueError(f"--freeze-backbone needs a backbone with a separate head; {arch_name} has none")
    head_module = model.get_submodule(head)
    for p in model.parameters():
        p.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0  # frozen means frozen: keep the pretrained running statistics
    for p in head_module.parameters():
        p.requires_grad_(True)
    return list(head_module.parameters())
