"""Hostile and odd input against the real gunicorn server (2 workers): every case answers a
4xx JSON error without internals or a correct result, never a 5xx, and no worker dies.

After every test the worker pids must be the ones the module started with and the server must
still be ready (``_workers_survive``), so a case that kills or wedges a worker fails loudly.
"""

import base64
import io
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from service_support import MODEL, assert_clean_error, band_images, encode, rss_mib

MAX_BODY = 1024 * 1024  # small, so that "over the limit" is cheap to send
MAX_IMAGES = 16


def _ids(values) -> list[str]:
    """Short test ids for long byte-string parameters."""
    return [f"{i}:{v[:16]!r}" for i, v in enumerate(values)]


@pytest.fixture(scope="module")
def server(start_server, trained_registry):
    server = start_server(trained_registry, MAX_BODY_BYTES=str(MAX_BODY),
                          MAX_IMAGES=str(MAX_IMAGES), MAX_PIXELS=str(4096 * 4096))
    server.wait_live()
    server.wait_versions(1)
    server.pids = server.wait_workers(2)
    return server


@pytest.fixture(autouse=True)
def _workers_survive(server):
    start = server.log_path.stat().st_size
    yield
    assert server.worker_pids() == server.pids, "a worker died:\n" + server.logs()
    assert server.client.get("/health/ready").status_code == 200
    with open(server.log_path, "rb") as handle:
        handle.seek(start)
        new_lines = handle.read().decode(errors="replace")
    assert "Traceback" not in new_lines and " 500 " not in new_lines, new_lines[-3000:]


@pytest.fixture(scope="module")
def images():
    return band_images(10, seed=11)[0]  # uint8 (10, 28, 28), one per class


def _post(server, data: bytes, content_type: str = "image/png", query: str = ""):
    return server.client.post(f"/predict{query}", content=data,
                              headers={"Content-Type": content_type})


def _index(response) -> int:
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["index"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_only(width: int, height: int, depth: int = 8, color: int = 0) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))


# ----------------------------------------------------------------------------- not images

NOT_IMAGES = [
    (b"", 400),                                        # zero bytes
    (b"\x00" * 1000, 422),                             # zeros
    (b"hello, I am text", 422),                        # non-image
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", 422),    # another file type
    (b"\x89PNG\r\n\x1a\n", 422),                       # only the magic number
    (_png_header_only(28, 28), 422),                   # only a header, no pixel data
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", 422),        # a JPEG header, cut
    (b"GIF89a\x1c\x00\x1c\x00", 422),                  # a GIF header, cut
    (b"BM" + b"\xff" * 60, 422),                       # a BMP header with nonsense
    (b"II*\x00\x08\x00\x00\x00\xff\xff", 422),         # a TIFF header with a broken IFD
]


@pytest.mark.parametrize(("data", "status"), NOT_IMAGES, ids=_ids([d for d, _ in NOT_IMAGES]))
def test_non_images_and_headers_only_are_4xx(server, data, status):
    body = assert_clean_error(_post(server, data), status)
    if status == 422:
        assert body["error"] == "invalid_image" and body["problems"][0]["index"] == 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_truncated_files_are_422(server, images, fmt):
    data = encode(Image.fromarray(images[0]).resize((200, 200)), fmt)
    for cut in (len(data) // 3, len(data) * 2 // 3):
        assert_clean_error(_post(server, data[:cut]), 422)


# ----------------------------------------------------------------------------- dimensions

def _png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG header for width x height with a few KB of compressed zeros."""
    compressor = zlib.compressobj(9)
    data = compressor.compress(b"\x00" * (min(width, 100_000) + 1) * 16) + compressor.flush()
    return _png_header_only(width, height) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [
    (50_000, 50_000), (1_000_000, 1), (1, 1_000_000), (65_535, 65_535), (2**31 - 1, 2**31 - 1),
])
def test_decompression_bombs_and_huge_dimensions_are_refused_or_fine(server, width, height):
    bomb = _png_bomb(width, height)
    assert len(bomb) < MAX_BODY
    response = _post(server, bomb)
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
    assert_clean_error(_post(server, gif, "image/gif"), 413)
    tiff = io.BytesIO()
    Image.new("L", (8, 8)).save(tiff, "TIFF")
    data = bytearray(tiff.getvalue())
    # Rewrite ImageWidth/ImageLength (tags 256/257) in the IFD to 60000.
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):
            fmt = "<H" if kind == 3 else "<I"
            struct.pack_into(fmt, data, entry + 8, 60_000)
    assert_clean_error(_post(server, bytes(data), "image/tiff"), 413)


# ----------------------------------------------------------------------------- odd but valid

def test_16_bit_png_gives_the_8_bit_answer(server, images):
    sixteen = Image.fromarray(images[3].astype(np.uint16) * 257)  # I;16, same intensities
    assert sixteen.mode.startswith("I;16")
    eight = _post(server, encode(images[3])).json()["predictions"][0]
    answer = _post(server, encode(sixteen)).json()["predictions"][0]
    assert answer["index"] == eight["index"]
    assert answer["score"] == pytest.approx(eight["score"], abs=1e-4)


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "1", "I", "F", "YCbCr", "RGB"])
def test_other_colour_modes_are_classified(server, images, mode):
    image = Image.fromarray(images[5]).convert("RGB").convert(mode)
    fmt = {"CMYK": "JPEG", "YCbCr": "JPEG", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
    response = _post(server, encode(image, fmt))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_opaque_alpha_and_exact_palette_give_the_plain_answer(server, images):
    plain = _index(_post(server, encode(images[6])))
    la = Image.fromarray(images[6]).convert("LA")  # alpha 255 everywhere
    assert _index(_post(server, encode(la))) == plain
    palette = Image.fromarray(images[6]).convert("P")  # grey palette: lossless for "L"
    assert _index(_post(server, encode(palette))) == plain


def test_palette_with_transparency_is_composited(server, images):
    image = Image.fromarray(images[8]).convert("P")
    image.info["transparency"] = 0
    assert _post(server, encode(image, transparency=0)).status_code == 200


def test_transparent_pixels_are_black(server, images):
    grey = Image.fromarray(images[7])
    clear = grey.convert("LA")
    clear.putalpha(0)  # fully transparent: composited on black
    black = _index(_post(server, encode(Image.new("L", (28, 28)))))
    assert _index(_post(server, encode(clear))) == black


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_use_the_first_frame(server, images, fmt):
    first_label, other = _index(_post(server, encode(images[1]))), None
    for candidate in images[2:]:
        if _index(_post(server, encode(candidate))) != first_label:
            other = candidate
            break
    assert other is not None, "the test model predicts one class for everything"
    first, second = Image.fromarray(images[1]), Image.fromarray(other)
    save = {"save_all": True, "append_images": [second, first, second], "duration": 50, "loop": 0}
    if fmt == "WEBP":
        save["lossless"] = True
    data = encode(first, fmt, **save)
    assert Image.open(io.BytesIO(data)).n_frames == 4
    assert _index(_post(server, data)) == first_label


def test_exif_rotated_jpeg_is_turned_upright(server, images):
    upright = Image.fromarray(images[2])
    expected = _index(_post(server, encode(upright, "JPEG", quality=100)))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera stores
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(stored, "JPEG", quality=100, exif=exif.tobytes())
    assert _index(_post(server, data)) == expected
    assert _index(_post(server, encode(stored, "JPEG", quality=100))) != expected  # meaningful


# ----------------------------------------------------------------------------- media types

SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
       b'<rect width="28" height="14" fill="white"/></svg>')


@pytest.mark.parametrize("content_type", ["image/svg+xml", "image/png", "image/*"])
def test_svg_is_415(server, content_type):
    body = assert_clean_error(_post(server, SVG, content_type), 415)
    assert "SVG" in body["detail"]


def test_svg_in_multipart_or_json_is_415(server):
    files = [("file", ("drawing.svg", SVG, "image/svg+xml"))]
    assert_clean_error(server.client.post("/predict", files=files), 415)
    payload = {"images": [base64.b64encode(SVG).decode()]}
    assert_clean_error(server.client.post("/predict", json=payload), 415)


@pytest.mark.parametrize("content_type", [
    None, "", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded",
    "video/mp4", "application/xml", "multipart/mixed; boundary=x", "not a media type at all",
    "image", "/", ";;;", "application/json-patch+json", "\u00e9/\u00e9",
])
def test_unsupported_or_missing_content_types_are_415(server, images, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type.encode("utf-8")}
    response = server.client.post("/predict", content=encode(images[0]), headers=headers)
    assert_clean_error(response, 415)


def test_wrong_but_image_content_types_are_sniffed(server, images):
    """The bytes decide the format: a PNG labelled image/jpeg is still a PNG."""
    for content_type in ("image/jpeg", "image/gif", "IMAGE/PNG", "image/png; charset=utf-8"):
        assert _post(server, encode(images[0]), content_type).status_code == 200


def test_a_png_sent_as_json_or_multipart_is_400(server, images):
    assert_clean_error(_post(server, encode(images[0]), "application/json"), 400)
    assert_clean_error(_post(server, encode(images[0]), "multipart/form-data; boundary=b"), 400)
    assert_clean_error(_post(server, encode(images[0]), "multipart/form-data"), 400)


# ----------------------------------------------------------------------------- JSON + base64

BAD_JSON = [
    b"{", b"[]", b"null", b'"images"', b"42", b'{"images": "aGk="}', b'{"images": [1, 2]}',
    b'{"images": [null]}', b'{"images": [{"data": "aGk="}]}', b'{"images": []}', b"{}",
    b'{"images": ["aGk="],}', b"\xff\xfe{\x00}\x00", b"[" * 100_000 + b"]" * 100_000,
    b'{"images": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"a": 1e999999}',
]


@pytest.mark.parametrize("body", BAD_JSON, ids=_ids(BAD_JSON))
def test_malformed_json_is_400(server, body):
    assert_clean_error(_post(server, body, "application/json"), 400)


@pytest.mark.parametrize("text", [
    "%%%not-base64%%%", "abc", "a", "=", "aGk=aGk=", "\u00e9t\u00e9", "data:image/png;base64,",
    "data:image/png;base64,!!!", " ",
])
def test_bad_base64_is_400(server, text):
    assert_clean_error(server.client.post("/predict", json={"images": [text]}), (400, 422))


def test_base64_wrapped_in_lines_or_url_safe_is_accepted(server, images):
    data = encode(images[4])
    wrapped = base64.encodebytes(data).decode()  # 76-column lines, like `base64 file.png`
    assert "\n" in wrapped
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    plain = _index(_post(server, data))
    response = server.client.post("/predict", json={"images": [wrapped, urlsafe]})
    assert response.status_code == 200, response.text
    assert [p["index"] for p in response.json()["predictions"]] == [plain, plain]


# ----------------------------------------------------------------------------- counts

def test_thousands_of_images_in_one_request_are_413(server, images):
    tiny = encode(Image.new("L", (1, 1)))
    files = [("file", (f"{i}.png", tiny, "image/png")) for i in range(3000)]
    body = assert_clean_error(server.client.post("/predict", files=files), 413)
    assert "MAX_IMAGES" in body["detail"]
    many = {"images": [base64.b64encode(tiny).decode()] * 20_000}
    assert_clean_error(server.client.post("/predict", json=many), 413)
    exactly = server.client.post("/predict", files=files[:MAX_IMAGES])
    assert exactly.status_code == 200 and len(exactly.json()["predictions"]) == MAX_IMAGES


BAD_MULTIPART = [
    b"--b--\r\n", b"", b"--b\r\n\r\n--b--\r\n", b"\r\n--b--", b"--b\r\nContent-Disposition: "
    b'form-data; name="file"; filename="a.png"\r\n\r\n\r\n--b--\r\n',
    b"--b\r\n" + b"X-Header: " + b"a" * 100_000 + b"\r\n\r\n--b--\r\n",
    b"--b\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(1000)) + b"\r\n--b--\r\n",
]


@pytest.mark.parametrize("body", BAD_MULTIPART, ids=_ids(BAD_MULTIPART))
def test_empty_or_broken_multipart_is_4xx(server, body):
    response = _post(server, body, "multipart/form-data; boundary=b")
    assert_clean_error(response, (400, 413, 422))


def test_multipart_text_fields_are_400_and_names_do_not_matter(server, images):
    field = server.client.post("/predict", data={"file": "not a file"})
    assert_clean_error(field, (400, 415))
    weird = [("../../etc/passwd", ("../../x.png", encode(images[0]), "text/plain")),
             ("\u00e9", ("\u00e9.png", encode(images[1]), "application/octet-stream"))]
    assert server.client.post("/predict", files=weird).status_code == 200


# ----------------------------------------------------------------------------- query values

@pytest.mark.parametrize("query", [
    "top_k=0", "top_k=-1", "top_k=abc", "top_k=", "top_k=1.5", "top_k=1e3", "top_k=11",
    "top_k=99999999999999999999999999", "top_k=%00", "top_k=1&top_k=x", "top_k=\u00e9",
    "top_k=2&top_k=2", "top_k=+3", "top_k=0x10", "top_k=1001",
])
def test_bad_query_values_are_400(server, images, query):
    assert_clean_error(_post(server, encode(images[0]), query=f"?{query}"), 400)


BAD_NAMES = [
    "../fmnist", "..", ".", "a/b", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "fmnist%00",
    "C:%5Cwindows", "%5C%5Cserver%5Cshare", "x" * 300, "", "fm nist", "fmnist/", "~root",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=_ids(BAD_NAMES))
def test_model_names_with_path_separators_are_400(server, images, name):
    body = assert_clean_error(_post(server, encode(images[0]), query=f"?model={name}"), 400)
    assert body["error"] == "invalid_model_name"


def test_unknown_but_well_formed_model_is_404(server, images):
    body = assert_clean_error(_post(server, encode(images[0]), query="?model=passwd"), 404)
    assert MODEL in body["detail"]


# ----------------------------------------------------------------------------- body limits

def test_announced_oversized_body_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 10000000000\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def _stream_chunked(port: int, total: int, chunk: int = 1 << 20) -> tuple[int, bytes, float]:
    """POST ``total`` bytes with chunked encoding, generated as they are sent; stop once the
    server answers. Returns (bytes sent, response head, seconds until the answer)."""
    piece = b"\x89PNG" + b"\x00" * (chunk - 4)
    sent, started = 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sock.setblocking(False)
        response = b""
        while sent < total:
            try:
                response += sock.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionError:
                break
            if response:
                break
            try:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except ConnectionError:
                break
            sent += len(piece)
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in response:
                more = sock.recv(65536)
                if not more:
                    break
                response += more
        except (ConnectionError, TimeoutError):
            pass
    return sent, response, time.monotonic() - started


def test_chunked_200_mb_upload_is_refused_while_streaming(server):
    before = {pid: rss_mib(pid) for pid in server.pids}
    sent, head, seconds = _stream_chunked(server.port, 200 << 20)
    assert head.startswith(b"HTTP/1.1 413"), head[:300]
    assert b"MAX_BODY_BYTES" in head or b"payload_too_large" in head
    # The server stopped reading near the limit: socket buffers, not the whole body.
    assert sent < 64 << 20, f"sent {sent >> 20} MiB before the server answered"
    assert seconds < 20
    grown = {pid: rss_mib(pid) - before[pid] for pid in server.pids}
    assert max(grown.values()) < 50, grown  # MiB: nothing like 200 MB was buffered
