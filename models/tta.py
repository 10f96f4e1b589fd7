"""Test-time augmentation as part of the model: what training evaluated, the service serves.

A model published with ``--tta hflip`` is wrapped in :class:`FlipAveraged` wherever it is
loaded (:func:`artifacts.registry.load_artifact`), so the service, the golden set, the
validation and test figures and the ONNX / torch.export exports all compute the same thing,
with no second code path to keep in step. The weights file holds the plain model's
``state_dict``: the wrapper has no parameters of its own.
"""

import math

import torch
from torch import nn

TEST_TIME_AUGMENTATIONS = ("none", "hflip")


class FlipAveraged(nn.Module):
    """Averages the class probabilities of each image and its mirror image.

    Returns ``log(mean(softmax(f(x)), softmax(f(flip(x)))))``: log-probabilities, so that
    everything downstream which applies ``softmax`` to a model's output (the service, the
    metrics, the exports' clients) gets the averaged probabilities unchanged. Costs two forward
    passes per image.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        both = self.model(torch.cat([x, x.flip(-1)]))  # (2N, K): one batch, one pass
        log_probs = both.float().log_softmax(dim=1)
        # unflatten, not chunk(2): torch.export would read chunk's split size as a fixed batch of 2
        original, mirrored = log_probs.unflatten(0, (2, -1)).unbind(0)
        return torch.logaddexp(original, mirrored) - math.log(2.0)


def with_test_time_augmentation(model: nn.Module, mode: str) -> nn.Module:
    """``model`` as it is evaluated under ``mode`` (one of :data:`TEST_TIME_AUGMENTATIONS`)."""
    if mode == "none":
        return model
    if mode == "hflip":
        return FlipAveraged(model)
    raise ValueError(f"unknown test-time augmentation {mode!r}: use one of {', '.join(TEST_TIME_AUGMENTATIONS)}")
