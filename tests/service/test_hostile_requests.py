"""Hostile requests: media types, SVG, JSON and base64, multipart, image counts, query values,
and bodies over MAX_BODY_BYTES, announced up front or streamed in chunks."""

import base64
import socket
import time

import pytest
from PIL import Image
from support.images import encode
from support.server import read_answer, rss_mib
from support.service import MAX_IMAGES, MODEL, assert_clean_error, post_raw, short_ids, top_index

pytestmark = pytest.mark.usefixtures("workers_survive")


# ----------------------------------------------------------------------------- media types

SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
       b'<rect width="28" height="14" fill="white"/></svg>')


@pytest.mark.parametrize("content_type", ["image/svg+xml", "image/png", "image/*"])
def test_svg_is_415(server, content_type):
    body = assert_clean_error(post_raw(server.client, SVG, content_type), 415)
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
        assert post_raw(server.client, encode(images[0]), content_type).status_code == 200


def test_a_png_sent_as_json_or_multipart_is_400(server, images):
    assert_clean_error(post_raw(server.client, encode(images[0]), "application/json"), 400)
    assert_clean_error(post_raw(server.client, encode(images[0]), "multipart/form-data; boundary=b"), 400)
    assert_clean_error(post_raw(server.client, encode(images[0]), "multipart/form-data"), 400)


# ----------------------------------------------------------------------------- JSON + base64

BAD_JSON = [
    b"{", b"[]", b"null", b'"images"', b"42", b'{"images": "aGk="}', b'{"images": [1, 2]}',
    b'{"images": [null]}', b'{"images": [{"data": "aGk="}]}', b'{"images": []}', b"{}",
    b'{"images": ["aGk="],}', b"\xff\xfe{\x00}\x00", b"[" * 100_000 + b"]" * 100_000,
    b'{"images": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"a": 1e999999}',
]


@pytest.mark.parametrize("body", BAD_JSON, ids=short_ids(BAD_JSON))
def test_malformed_json_is_400(server, body):
    assert_clean_error(post_raw(server.client, body, "application/json"), 400)


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
    plain = top_index(post_raw(server.client, data))
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


@pytest.mark.parametrize("body", BAD_MULTIPART, ids=short_ids(BAD_MULTIPART))
def test_empty_or_broken_multipart_is_4xx(server, body):
    response = post_raw(server.client, body, "multipart/form-data; boundary=b")
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
    assert_clean_error(post_raw(server.client, encode(images[0]), query=f"?{query}"), 400)


BAD_NAMES = [
    "../fmnist", "..", ".", "a/b", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "fmnist%00",
    "C:%5Cwindows", "%5C%5Cserver%5Cshare", "x" * 300, "", "fm nist", "fmnist/", "~root",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=short_ids(BAD_NAMES))
def test_model_names_with_path_separators_are_400(server, images, name):
    body = assert_clean_error(post_raw(server.client, encode(images[0]), query=f"?model={name}"), 400)
    assert body["error"] == "invalid_model_name"


def test_unknown_but_well_formed_model_is_404(server, images):
    body = assert_clean_error(post_raw(server.client, encode(images[0]), query="?model=passwd"), 404)
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
    server answers. Returns (bytes sent, the whole response, seconds until the answer)."""
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
        response = read_answer(sock, response)
    return sent, response, time.monotonic() - started


def test_chunked_200_mb_upload_is_refused_while_streaming(server):
    before = {pid: rss_mib(pid) for pid in server.pids}
    sent, response, seconds = _stream_chunked(server.port, 200 << 20)
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    assert b"MAX_BODY_BYTES" in response or b"payload_too_large" in response
    # The server stopped reading near the limit: socket buffers, not the whole body.
    assert sent < 64 << 20, f"sent {sent >> 20} MiB before the server answered"
    assert seconds < 20
    grown = {pid: rss_mib(pid) - before[pid] for pid in server.pids}
    assert max(grown.values()) < 50, grown  # MiB: nothing like 200 MB was buffered
