"""Decoding uploads (``service.inference.imaging``): every mode and format gives the tensor the
training loader gives for the same file, and what cannot be decoded is refused with its status.
(Random files of every kind: test_imaging_properties.py.)"""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from support.images import band_images, encode

from artifacts.preprocess import InputSpec, image_to_uint8
from service.inference.imaging import ImageDecodeError, decode_image

GREY = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.25,))
RGB = InputSpec(channels=3, height=32, width=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def _training_path(data: bytes, spec: InputSpec) -> torch.Tensor:
    """What the training ImageFolder loader and `python -m training predict` do with a file."""
    with Image.open(io.BytesIO(data)) as image:
        return image_to_uint8(ImageOps.exif_transpose(image), spec=spec)


def _variants() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: must be turned upright like in training
    sixteen = Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16))
    return {
        "grey-png": encode(band_images(1, seed=1)[0][0]),
        "rgb-jpeg": encode(rgb, "JPEG", quality=90),
        "rgba-png": encode(rgba),
        "palette-gif": encode(rgb.convert("P")),
        "exif-jpeg": encode(rgb, "JPEG", exif=exif),
        "16bit-png": encode(sixteen),
        "bmp": encode(rgb, "BMP"),
        "webp": encode(rgb, "WEBP"),
    }


@pytest.mark.parametrize("spec", [GREY, RGB], ids=["grey", "rgb"])
@pytest.mark.parametrize("kind", list(_variants()))
def test_decode_matches_the_training_loader_for_every_mode(kind, spec):
    data = _variants()[kind]
    decoded = decode_image(data, spec=spec, max_pixels=10_000)
    assert decoded.dtype == torch.uint8 and decoded.shape == (spec.channels, 28 if spec is GREY
                                                              else 32, 28 if spec is GREY else 32)
    assert torch.equal(decoded, _training_path(data, spec))


def test_decode_refuses_bad_input_with_the_right_status():
    spec, limit = GREY, 100
    assert _status(b"", spec, limit) == 422
    assert _status(b"GIF89a-garbage", spec, limit) == 422
    assert _status(encode(Image.new("L", (11, 10))), spec, limit) == 413
    pdf_like = b"%PDF-1.4\n" + b"0" * 100
    assert _status(pdf_like, spec, limit) == 422
    ico = encode(Image.new("RGB", (8, 8)), "ICO")  # a real image, but not an allowed format
    assert _status(ico, spec, limit) == 422


def _status(data: bytes, spec: InputSpec, limit: int) -> int:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, spec=spec, max_pixels=limit)
    return info.value.status
