"""The classic fully connected baseline: Flatten -> 784-512-ReLU-512-ReLU-10."""

from torch import nn


class MLP(nn.Sequential):
    """The seeds' network, generalised to any input size and class count.

    ``hidden`` keeps the seeds' two 512-unit layers by default; ``dropout`` is off by default
    so that the seeds' recipe is reproduced faithfully.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: tuple[int, int],
        hidden: tuple[int, ...] = (512, 512),
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]  # (N, C, H, W) -> (N, C*H*W)
        width = in_channels * image_size[0] * image_size[1]
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, num_classes))  # logits: CrossEntropyLoss applies softmax
        super().__init__(*layers)
