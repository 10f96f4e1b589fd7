"""Hostile image files: not images, truncated files, decompression bombs, odd but valid formats."""

import io
import struct

import numpy as np
import pytest
from PIL import Image
from support.bombs import png_bomb, png_header_only
from support.images import encode
from support.service import MAX_BODY, assert_clean_error, post_raw, short_ids, top_index

pytestmark = pytest.mark.usefixtures("workers_survive")


# ----------------------------------------------------------------------------- not images

NOT_IMAGES = [
    (b"", 400),                                        # zero bytes
    (b"\x00" * 1000, 422),                             # zeros
    (b"hello, I am text", 422),                        # non-image
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", 422),    # another file type
    (b"\x89PNG\r\n\x1a\n", 422),                       # only the magic number
    (png_header_only(28, 28), 422),                   # only a header, no pixel data
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", 422),        # a JPEG header, cut
    (b"GIF89a\x1c\x00\x1c\x00", 422),                  # a GIF header, cut
    (b"BM" + b"\xff" * 60, 422),                       # a BMP header with nonsense
    (b"II*\x00\x08\x00\x00\x00\xff\xff", 422),         # a TIFF header with a broken IFD
]


@pytest.mark.parametrize(("data", "status"), NOT_IMAGES, ids=short_ids([d for d, _ in NOT_IMAGES]))
def test_non_images_and_headers_only_are_4xx(server, data, status):
    body = assert_clean_error(post_raw(server.client, data), status)
    if status == 422:
        assert body["error"] == "invalid_image" and body["problems"][0]["index"] == 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_files_are_422(server, images, fmt):
    data = encode(Image.fromarray(images[0]).resize((200, 200)), fmt)
    for cut in (len(data) // 3, len(data) * 2 // 3):
        assert_clean_error(post_raw(server.client, data[:cut]), 422)


# ----------------------------------------------------------------------------- dimensions

@pytest.mark.parametrize(("width", "height"), [
    (50_000, 50_000), (1_000_000, 1), (1, 1_000_000), (65_535, 65_535), (2**31 - 1, 2**31 - 1),
])
def test_decompression_bombs_and_huge_dimensions_are_refused_or_fine(server, width, height):
    bomb = png_bomb(width, height)
    assert len(bomb) < MAX_BODY
    response = post_raw(server.client, bomb)
    if width * height <= 4096 * 4096:  # a long thin strip is a legitimate image
        assert response.status_code == 200, response.text
    elif width * height < 2**31:
        body = assert_clean_error(response, 413)
        assert "MAX_PIXELS" in body["detail"]
    else:  # PIL itself refuses a dimension beyond 2**31 as a broken file
        assert_clean_error(response, (413, 422))


def test_gif_and_tiff_bombs_are_refused_from_the_header(server):
    gif = (b"GIF89a" + struct.pack("<HH", 60_000, 60_000) + b"\x00\x00\x00"
           + b"\x2c" + struct.pack("<HHHH", 0, 0, 60_000, 60_000) + b"\x00\x02\x02\x44\x01\x00;")
    assert_clean_error(post_raw(server.client, gif, "image/gif"), 413)
    data = bytearray(encode(Image.new("L", (8, 8)), "TIFF"))
    # Rewrite ImageWidth/ImageLength (tags 256/257) in the IFD to 60000.
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):
            fmt = "<H" if kind == 3 else "<I"
            struct.pack_into(fmt, data, entry + 8, 60_000)
    assert_clean_error(post_raw(server.client, bytes(data), "image/tiff"), 413)


# ----------------------------------------------------------------------------- odd but valid

def test_16_bit_png_gives_the_8_bit_answer(server, images):
    sixteen = Image.fromarray(images[3].astype(np.uint16) * 257)  # I;16, same intensities
    assert sixteen.mode.startswith("I;16")
    eight = post_raw(server.client, encode(images[3])).json()["predictions"][0]
    answer = post_raw(server.client, encode(sixteen)).json()["predictions"][0]
    assert answer["index"] == eight["index"]
    assert answer["score"] == pytest.approx(eight["score"], abs=1e-4)


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "1", "I", "F", "YCbCr", "RGB"])
def test_other_colour_modes_are_classified(server, images, mode):
    image = Image.fromarray(images[5]).convert("RGB").convert(mode)
    fmt = {"CMYK": "JPEG", "YCbCr": "JPEG", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
    response = post_raw(server.client, encode(image, fmt))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_opaque_alpha_and_exact_palette_give_the_plain_answer(server, images):
    plain = top_index(post_raw(server.client, encode(images[6])))
    la = Image.fromarray(images[6]).convert("LA")  # alpha 255 everywhere
    assert top_index(post_raw(server.client, encode(la))) == plain
    palette = Image.fromarray(images[6]).convert("P")  # grey palette: lossless for "L"
    assert top_index(post_raw(server.client, encode(palette))) == plain


def test_palette_with_transparency_is_composited(server, images):
    image = Image.fromarray(images[8]).convert("P")
    image.info["transparency"] = 0
    assert post_raw(server.client, encode(image, transparency=0)).status_code == 200


def test_transparent_pixels_are_black(server, images):
    grey = Image.fromarray(images[7])
    clear = grey.convert("LA")
    clear.putalpha(0)  # fully transparent: composited on black
    black = top_index(post_raw(server.client, encode(Image.new("L", (28, 28)))))
    assert top_index(post_raw(server.client, encode(clear))) == black


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_use_the_first_frame(server, images, fmt):
    first_label, other = top_index(post_raw(server.client, encode(images[1]))), None
    for candidate in images[2:]:
        if top_index(post_raw(server.client, encode(candidate))) != first_label:
            other = candidate
            break
    assert other is not None, "the test model predicts one class for everything"
    first, second = Image.fromarray(images[1]), Image.fromarray(other)
    save = {"save_all": True, "append_images": [second, first, second], "duration": 50, "loop": 0}
    if fmt == "WEBP":
        save["lossless"] = True
    data = encode(first, fmt, **save)
    assert Image.open(io.BytesIO(data)).n_frames == 4
    assert top_index(post_raw(server.client, data)) == first_label


def test_exif_rotated_jpeg_is_turned_upright(server, images):
    upright = Image.fromarray(images[2])
    expected = top_index(post_raw(server.client, encode(upright, "JPEG", quality=100)))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera stores
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(stored, "JPEG", quality=100, exif=exif.tobytes())
    assert top_index(post_raw(server.client, data)) == expected
    assert top_index(post_raw(server.client, encode(stored, "JPEG", quality=100))) != expected  # meaningful
