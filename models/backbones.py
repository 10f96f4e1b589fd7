"""torchvision backbones adapted to small images, any channel count, and local pretrained weights.

Pretrained weights are never downloaded here: users pass a local ``state_dict`` file (for example
torchvision's ImageNet weights saved beforehand) and :func:`load_pretrained` maps it onto the
adapted network.
"""

import logging

import torch
from torch import nn
from torchvision import models as tv_models

log = logging.getLogger(__name__)

# Images smaller than this get a CIFAR-style stem (3x3 stride-1 convolution, no max-pool):
# the ImageNet stem would shrink a 28x28 input to 7x7 before the first residual block.
SMALL_INPUT_SIDE = 96


def _is_small(image_size: tuple[int, int]) -> bool:
    return min(image_size) < SMALL_INPUT_SIDE


def resnet18(
    *, num_classes: int, in_channels: int, image_size: tuple[int, int]
) -> nn.Module:
    """ResNet-18; for small inputs the stem keeps full resolution (no stride, no max-pool)."""
    model = tv_models.resnet18(weights=None, num_classes=num_classes)
    if _is_small(image_size):
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def mobilenet_v3_small(
    *, num_classes: int, in_channels: int, image_size: tuple[int, int], dropout: float = 0.2
) -> nn.Module:
    """MobileNetV3-Small; for small inputs the stride-2 stem becomes stride 1."""
    model = tv_models.mobilenet_v3_small(weights=None, num_classes=num_classes, dropout=dropout)
    stem: nn.Conv2d = model.features[0][0]
    stride = 1 if _is_small(image_size) else 2
    model.features[0][0] = nn.Conv2d(
        in_channels, stem.out_channels, kernel_size=3, stride=stride, padding=1, bias=False
    )
    return model


def _adapt_kernel(source: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
    """Fit a pretrained stem kernel (out, in, k, k) to another channel count or kernel size.

    Input channels are averaged and repeated (the usual trick for grayscale transfer), and a
    larger kernel is centre-cropped. Returns None when the shapes cannot be reconciled.
    """
    if source.dim() != 4 or source.shape[0] != target_shape[0]:
        return None
    kernel = source
    if kernel.shape[1] != target_shape[1]:
        kernel = kernel.mean(dim=1, keepdim=True).repeat(1, target_shape[1], 1, 1)
        kernel = kernel * (source.shape[1] / target_shape[1])  # keep the activation scale
    k_src, k_dst = kernel.shape[-1], target_shape[-1]
    if k_src < k_dst:
        return None
    start = (k_src - k_dst) // 2
    return kernel[..., start : start + k_dst, start : start + k_dst].contiguous()


def load_pretrained(model: nn.Module, pretrained: dict[str, torch.Tensor]) -> list[str]:
    """Copy every compatible tensor of ``pretrained`` into ``model``; return the keys left out.

    Tensors of the same name and shape are copied; a stem convolution of another shape is
    adapted (:func:`_adapt_kernel`); the classifier head, whose class count differs, is left
    at its fresh initialisation. Raises ``ValueError`` when nothing matches, which means the
    file belongs to another architecture.
    """
    own = model.state_dict()
    merged, skipped = {}, []
    for key, target in own.items():
        source = pretrained.get(key)
        if source is not None and source.shape != target.shape:
            source = _adapt_kernel(source, target.shape)
        if source is None:
            skipped.append(key)
        else:
            merged[key] = source.to(target.dtype)
    if not merged:
        raise ValueError("no tensor of the pretrained weights matches this architecture")
    model.load_state_dict(merged, strict=False)
    log.info("pretrained weights: %d tensors loaded, %d left at init", len(merged), len(skipped))
    return skipped
