"""Mixup and CutMix: batch-level augmentation that mixes images and their labels.

torchvision's own ``v2.MixUp`` / ``v2.CutMix`` (one of the two per batch when both are on, as
torchvision's classification reference does), applied to each training batch after
normalisation; the labels become class probabilities, which ``CrossEntropyLoss`` takes as they
are (label smoothing included). They draw from torch's global generator, whose state every
checkpoint saves at the end of an epoch, so a resumed run mixes exactly as the original did.
"""

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from training.config import TrainConfig

Mixing = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build_mixing(cfg: TrainConfig, num_classes: int) -> Mixing | None:
    """``(images, int64 labels) -> (mixed images, (N, K) label probabilities)``, or None when
    both ``--mixup-alpha`` and ``--cutmix-alpha`` are 0."""
    choices: list[v2.Transform] = []
    if cfg.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
