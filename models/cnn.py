"""Convolutional networks for small images (28x28 grayscale, 32x32 RGB)."""

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 'same' convolution, BatchNorm, ReLU; the bias is redundant before BatchNorm."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SeedCNN(nn.Sequential):
    """The seeds' BatchNorm CNN: (Conv-BN-ReLU-AvgPool) x3, then one Linear layer.

    Unlike the seed it ends in logits, not Softmax: ``CrossEntropyLoss`` applies log-softmax
    itself, and a Softmax before it squashes the gradients (the seed's known bug).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: tuple[int, int],
        channels: tuple[int, ...] = (32, 64, 128),
    ) -> None:
        layers: list[nn.Module] = []
        height, width = image_size
        previous = in_channels
        for out in channels:
            layers += [*conv_bn_relu(previous, out), nn.AvgPool2d(2)]
            previous, height, width = out, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} pooling stages")
        layers += [nn.Flatten(), nn.Linear(previous * height * width, num_classes)]
        super().__init__(*layers)


class WideCNN(nn.Sequential):
    """The recommended network for 28x28 / 32x32 data (the Fashion-MNIST default).

    Three VGG-style stages of 3x3 convolutions (``depth`` per stage; widths w, 2w, 4w) with
    max-pooling between them, global average pooling and dropout before the classifier. Sized
    so that a 2-core CPU trains it to about 93% Fashion-MNIST test accuracy in ten minutes.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: tuple[int, int],
        width: int = 32,
        depth: tuple[int, ...] | list[int] = (2, 2, 1),
        dropout: float = 0.25,
    ) -> None:
        del image_size  # global pooling makes the network size-agnostic
        layers: list[nn.Module] = []
        previous = in_channels
        for stage, convs in enumerate(depth):
            if stage:
                layers.append(nn.MaxPool2d(2))  # (N, C, H, W) -> (N, C, H/2, W/2)
            for _ in range(convs):
                layers += conv_bn_relu(previous, width * 2**stage)
                previous = width * 2**stage
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (N, 4w)
            nn.Dropout(dropout),
            nn.Linear(previous, num_classes),
        ]
        super().__init__(*layers)
