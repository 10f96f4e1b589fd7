"""Architecture name -> builder. Every builder takes ``num_classes``, ``in_channels`` and
``image_size`` plus its own keyword arguments, so ``metadata.json`` alone rebuilds a model."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from models import backbones
from models.cnn import SeedCNN, WideCNN
from models.mlp import MLP


class UnknownArchitectureError(ValueError):
    """Raised for a model name that is not registered; the message lists the valid names."""


@dataclass(frozen=True)
class Architecture:
    """A registered model: how to build it and which submodule is its classifier head."""

    builder: Callable[..., nn.Module]
    head: str  # attribute name of the classifier, trained alone under --freeze-backbone
    summary: str


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(MLP, head="", summary="the seeds' MLP 784-512-512-10"),
    "cnn": Architecture(SeedCNN, head="", summary="the seeds' BatchNorm CNN (logits, no Softmax)"),
    "wide_cnn": Architecture(WideCNN, head="", summary="recommended for 28x28/32x32 (>=93% FMNIST)"),
    "resnet18": Architecture(backbones.resnet18, head="fc", summary="torchvision ResNet-18"),
    "mobilenet_v3_small": Architecture(
        backbones.mobilenet_v3_small, head="classifier", summary="torchvision MobileNetV3-Small"
    ),
}


def available() -> list[str]:
    return sorted(ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"Unknown model {name!r}. Valid models: {', '.join(available())}."
        ) from None


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int] | list[int],
    **kwargs: Any,
) -> nn.Module:
    """Build a fresh (randomly initialised) model by registry name."""
    arch = get_architecture(name)
    size = (int(image_size[0]), int(image_size[1]))
    return arch.builder(num_classes=num_classes, in_channels=in_channels, image_size=size, **kwargs)
