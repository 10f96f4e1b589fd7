"""Property-based tests (hypothesis) of decoding: whatever bytes arrive, the result is a tensor
of the model's input shape or a domain error with a 4xx status, never anything else."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.images import encode

from artifacts.preprocess import InputSpec
from service.inference.imaging import ImageDecodeError, decode_image

GREY = InputSpec(1, 28, 28, (0.5,), (0.5,))
RGB = InputSpec(3, 32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
MAX_PIXELS = 512 * 512
# Pillow warns (UserWarning) about the broken TIFF metadata of the files fed on purpose below.
CORRUPT_TIFF_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
PROPERTY = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# (mode, formats that can store it)
MODES = {
    "L": ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"],
    "RGB": ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"],
    "RGBA": ["PNG", "TIFF", "WEBP", "GIF"],
    "LA": ["PNG", "TIFF"],
    "P": ["PNG", "GIF", "BMP", "TIFF"],
    "1": ["PNG", "BMP", "TIFF", "GIF"],
    "I;16": ["PNG", "TIFF"],
    "I": ["TIFF"],  # Pillow deprecates writing "I" as PNG
    "F": ["TIFF"],
    "CMYK": ["JPEG", "TIFF"],
}


@st.composite
def image_files(draw) -> bytes:
    """A real image file of a random mode, size and format."""
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        scale = {"I;16": 257, "I": 257, "F": 1.0 / 255}[mode]
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray((np.asarray(image, dtype=np.float64) * scale).astype(dtype))
    return encode(image, fmt)


def _decode_or_refuse(data: bytes, spec: InputSpec) -> torch.Tensor | None:
    try:
        tensor = decode_image(data, spec=spec, max_pixels=MAX_PIXELS)
    except ImageDecodeError as exc:
        assert exc.status in (413, 415, 422), exc.status
        assert exc.detail
        return None
    assert tensor.dtype == torch.uint8
    assert tuple(tensor.shape) == (spec.channels, spec.height, spec.width)
    return tensor


@CORRUPT_TIFF_WARNINGS
@PROPERTY
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_are_refused_with_4xx(data):
    _decode_or_refuse(data, GREY)


@PROPERTY
@given(image_files(), st.sampled_from([GREY, RGB]))
def test_any_real_image_decodes_to_the_model_input_shape(data, spec):
    assert _decode_or_refuse(data, spec) is not None


@CORRUPT_TIFF_WARNINGS
@PROPERTY
@given(image_files(), st.data())
def test_truncated_or_corrupted_images_never_raise_anything_else(data, draw):
    cut = draw.draw(st.integers(0, len(data)))
    _decode_or_refuse(data[:cut], GREY)
    flips = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)),
                               min_size=1, max_size=8))
    corrupted = bytearray(data)
    for position, mask in flips:
        corrupted[position] ^= mask
    _decode_or_refuse(bytes(corrupted), RGB)


@CORRUPT_TIFF_WARNINGS
@PROPERTY
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"\xff\xd8\xff", b"BM",
                        b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"P5\n", b"P6\n"]),
       st.binary(max_size=512))
def test_valid_magic_numbers_followed_by_garbage_are_refused_with_4xx(magic, tail):
    _decode_or_refuse(magic + tail, GREY)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_listed_mode_and_format_really_decodes(mode):
    """The strategy above is not vacuous: each mode/format pair is a real, decodable file."""
    for fmt in MODES[mode]:
        image = Image.new("L", (9, 7), 128).convert(mode if mode not in ("I;16", "I", "F") else "L")
        if mode in ("I;16", "I", "F"):
            image = Image.fromarray(np.full((7, 9), 1000, {"I;16": np.uint16, "I": np.int32,
                                                         "F": np.float32}[mode]))
        assert _decode_or_refuse(encode(image, fmt), GREY) is not None, (mode, fmt)
