"""Exponential moving average of the weights, as torchvision's classification reference keeps it.

The averaged copy, not the raw weights, is what gets validated, chosen, tested and published
under ``--ema``: late in a run SGD's weights jitter around a minimum and their average sits
nearer its centre. Three choices follow ``references/classification/train.py``:

- the average is updated every ``ema_steps`` optimizer steps (cheap on a CPU), and at the end
  of every epoch;
- its per-update weight is scaled by ``batch_size * ema_steps / epochs`` (times the world
  size), so the average spans about ``epochs / ((1 - ema_decay) * training samples)`` epochs
  whatever the batch size: a fixed share of the run, not a fixed number of steps;
- while the learning rate still rises (the schedule's warm-up) the average restarts at every
  update: the early weights are not worth remembering.

BatchNorm's running statistics are averaged too (``use_buffers=True``), so the averaged model
evaluates with statistics that match its weights. Its ``state_dict`` goes into every
checkpoint, so an exact resume continues the same average.
"""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.config import TrainConfig


class WeightAverage:
    """The EMA of ``model`` (unwrapped, not its DDP wrapper), updated by :meth:`step` after
    each optimizer step."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, world_size: int, steps_per_epoch: int,
                 warmup_epochs: float) -> None:
        # at least once per epoch, or a run of a few steps would publish its initial weights
        self.every = max(1, min(cfg.ema_steps, steps_per_epoch))
        self.steps_per_epoch = steps_per_epoch
        adjust = world_size * cfg.batch_size * self.every / cfg.epochs
        alpha = min(1.0, (1.0 - cfg.ema_decay) * adjust)  # 1 in very short runs: the last weights
        self.source = model
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(1.0 - alpha), use_buffers=True)
        self.warmup_steps = int(warmup_epochs * steps_per_epoch)

    @property
    def module(self) -> nn.Module:
        """The averaged network itself: same class and ``state_dict`` keys as the model."""
        return self.averaged.module

    def step(self, global_step: int) -> None:
        """After optimizer step number ``global_step`` of the run (counted from 1). The last
        step of every epoch updates too, so what an epoch's end evaluates holds its last weights."""
        if global_step % self.every and global_step % self.steps_per_epoch:
            return
        self.averaged.update_parameters(self.source)
        if global_step <= self.warmup_steps:
            self.averaged.n_averaged.fill_(0)  # the next update copies the weights again

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.averaged.load_state_dict(state)
