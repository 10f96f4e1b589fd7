"""Property-based tests (hypothesis) of the decoding path: whatever bytes arrive, the result is
a tensor of the model's input shape or a domain error with a 4xx status, never anything else."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from artifacts.preprocess import InputSpec
from service.api.parsing import MAX_TOP_K, parse_images, parse_predict_query
from service.errors import ServiceError
from service.inference.imaging import ImageDecodeError, decode_image

GREY = InputSpec(1, 28, 28, (0.5,), (0.5,))
RGB = InputSpec(3, 32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
MAX_PIXELS = 512 * 512
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
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


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


@PROPERTY
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_are_refused_with_4xx(data):
    _decode_or_refuse(data, GREY)


@PROPERTY
@given(image_files(), st.sampled_from([GREY, RGB]))
def test_any_real_image_decodes_to_the_model_input_shape(data, spec):
    assert _decode_or_refuse(data, spec) is not None


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


@PROPERTY
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"\xff\xd8\xff", b"BM",
                        b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"P5\n", b"P6\n"]),
       st.binary(max_size=512))
def test_valid_magic_numbers_followed_by_garbage_are_refused_with_4xx(magic, tail):
    _decode_or_refuse(magic + tail, GREY)


CONTENT_TYPES = st.one_of(
    st.none(),
    st.sampled_from(["image/png", "image/svg+xml", "application/json", "text/plain",
                     "multipart/form-data", "multipart/form-data; boundary=xyz",
                     "multipart/form-data; boundary=", "image/", "", ";", "application/json; x"]),
    st.text(max_size=40),
)


@PROPERTY
@given(CONTENT_TYPES, st.binary(max_size=2048))
def test_any_body_parses_to_images_or_a_4xx_error(content_type, body):
    try:
        images = parse_images(content_type, body, max_images=8)
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500
        return
    assert 1 <= len(images) <= 8 and all(isinstance(i.data, bytes) for i in images)


@PROPERTY
@given(st.binary(max_size=200))
def test_any_query_gives_a_valid_top_k_or_a_400(query):
    """The /predict handler parses its query by hand (service.api.parsing): whatever arrives, it
    yields a top_k in range and the raw model name, or a 400."""
    try:
        top_k, model = parse_predict_query(query)
    except ServiceError as exc:
        assert exc.status_code == 400
        return
    assert isinstance(top_k, int) and 1 <= top_k <= MAX_TOP_K
    assert model is None or isinstance(model, str)


def test_query_defaults_and_values():
    assert parse_predict_query(b"") == (1, None)
    assert parse_predict_query(b"top_k=3&model=fmnist&other=x") == (3, "fmnist")
    assert parse_predict_query(b"model=") == (1, "")  # refused later as an invalid name
    for bad in (b"top_k=0", b"top_k=1001", b"top_k=", b"top_k=1&top_k=1", b"model=a&model=b"):
        with pytest.raises(ServiceError) as caught:
            parse_predict_query(bad)
        assert caught.value.status_code == 400


@PROPERTY
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
       st.sampled_from(["standard", "wrapped", "urlsafe", "data-url"]))
def test_base64_json_round_trips_the_exact_bytes(files, style):
    encoders = {
        "standard": lambda b: base64.b64encode(b).decode(),
        "wrapped": lambda b: base64.encodebytes(b).decode(),
        "urlsafe": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
        "data-url": lambda b: "data:image/png;base64," + base64.b64encode(b).decode(),
    }
    body = json.dumps({"images": [encoders[style](data) for data in files]}).encode()
    images = parse_images("application/json", body, max_images=8)
    assert [image.data for image in images] == files


@PROPERTY
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?", min_size=1,
               max_size=40))
def test_multipart_round_trips_files_in_order(files, boundary):
    parts = [b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="file"; '
             b'filename="f%d.png"\r\nContent-Type: image/png\r\n\r\n' % i + data + b"\r\n"
             for i, data in enumerate(files)]
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    content_type = f'multipart/form-data; boundary="{boundary}"'
    try:
        images = parse_images(content_type, body, max_images=10)
    except ServiceError as exc:
        # A boundary that occurs inside a file is the client's malformed body: still a 4xx.
        assert 400 <= exc.status_code < 500
        assume_boundary_in_data = any(boundary.encode() in data for data in files)
        assert assume_boundary_in_data or (len(files) == 1 and not files[0]), exc.detail
        return
    assert [image.data for image in images] == files
    assert [image.filename for image in images] == [f"f{i}.png" for i in range(len(files))]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_listed_mode_and_format_really_decodes(mode):
    """The strategy above is not vacuous: each mode/format pair is a real, decodable file."""
    for fmt in MODES[mode]:
        image = Image.new("L", (9, 7), 128).convert(mode if mode not in ("I;16", "I", "F") else "L")
        if mode in ("I;16", "I", "F"):
            image = Image.fromarray(np.full((7, 9), 1000, {"I;16": np.uint16, "I": np.int32,
                                                         "F": np.float32}[mode]))
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        assert _decode_or_refuse(buffer.getvalue(), GREY) is not None, (mode, fmt)
