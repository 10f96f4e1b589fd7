"""The one definition of input preprocessing, shared by training, evaluation and the service.

Images are kept as uint8 tensors ``(N, C, H, W)`` until a batch is about to enter the model;
:class:`EvalTransform` then turns them into normalised floats. The service decodes uploads with
:func:`image_to_pixels` (the core of :func:`image_to_uint8`, which training uses) and applies
the same :class:`EvalTransform` the training evaluation used, described by the artifact's
``input`` metadata (:class:`InputSpec`).
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: channel count, size, and per-channel normalisation."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        return cls(
            channels=int(data["channels"]),
            height=int(data["height"]),
            width=int(data["width"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


class EvalTransform:
    """uint8 ``(N, C, H, W)`` -> float32 normalised, on whatever device the batch is on."""

    def __init__(self, *, spec: InputSpec) -> None:
        self.spec = spec
        # Fold /255 and the normalisation into one multiply-add: x * scale + shift.
        std = torch.tensor(spec.std, dtype=torch.float32)
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self._shift = (-mean / std).view(1, -1, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8 or batch.dim() != 4:
            raise TypeError(f"expected a uint8 (N, C, H, W) batch, got {batch.dtype} {tuple(batch.shape)}")
        scale = self._scale.to(batch.device)
        shift = self._shift.to(batch.device)
        return torch.addcmul(shift, batch.float(), scale)


def image_to_pixels(image: Image.Image, *, spec: InputSpec) -> bytes:
    """A decoded PIL image -> its pixels in the model's colour mode and size, as ``H*W*C`` bytes
    (rows, then columns, channels interleaved: PIL's own layout, so nothing is rearranged here).

    Transparent pixels are composited on black (the background of the training data), palette
    and 16-bit images are converted first, and any size is resized with bilinear antialiasing.
    Bytes rather than a tensor so that the service decodes without a torch call per image and
    builds each batch with :func:`pixels_to_uint8` in one copy.
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    mode = "L" if spec.channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    return image.tobytes()


def pixels_to_uint8(pixels: list[bytes], *, spec: InputSpec) -> torch.Tensor:
    """:func:`image_to_pixels` results of one spec -> a uint8 ``(N, C, H, W)`` tensor."""
    flat = torch.frombuffer(bytearray().join(pixels), dtype=torch.uint8)  # one copy, writable
    batch = flat.view(len(pixels), spec.height, spec.width, spec.channels)
    return batch.permute(0, 3, 1, 2).contiguous()


def image_to_uint8(image: Image.Image, *, spec: InputSpec) -> torch.Tensor:
    """A decoded PIL image -> uint8 ``(C, H, W)`` in the model's colour mode and size."""
    return pixels_to_uint8([image_to_pixels(image, spec=spec)], spec=spec)[0]
