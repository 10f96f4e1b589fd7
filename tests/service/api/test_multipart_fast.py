"""``service.api.multipart_fast``, the fast path for canonical form uploads, against the multipart
library it shortcuts: on generated bodies of every shape, legal or not, ``parse_images``
answers the same with and without the fast path; and what real clients send takes it."""

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import service.api.parsing
from service.api.multipart_fast import split_files
from service.api.parsing import parse_images
from service.errors import ServiceError

MAX_IMAGES = 4
CANONICAL_BOUNDARIES = ["----WebKitFormBoundary7MA4YWxkTrZu0gW", "b0undary", "a'()+_,./:=?-z"]
ODD_BOUNDARIES = ["with space", "x" * 71, "semi;colon", "caf\u00e9", "new\nline", "cr\r"]
FILENAMES = ["a.png", "", 'q\\"uote.png', "%22x%22.png", "C:\\\\dir\\\\a.png", "\u00e9t\u00e9.png",
             "a;b.png", "x y.png", "%0D%0A.png", "f" * 4200 + ".png"]
DEFECTS = ["no disposition", "lower-case name", "separator", "other disposition",
           "extra header", "LF line ends", "CR line ends", "delimiter tail", "two dispositions",
           "folded header", "nine headers"]
OTHER_DISPOSITIONS = ['form-data; name="file"', "form-data; name=file; filename=a.png",
                      'attachment; filename="x"', 'form-data; filename="no-name.png"',
                      "form-data", "", 'form-data; name="f"; filename*=UTF-8\'\'x.png']
OTHER_HEADERS = ["Content-Type: application/octet-stream; x=y", "Content-Length: 3",
                 "X-Other: 1", "no colon here", "Content-Type:image/png", "Content-Type: image/png",
                 "Bad Name: 1", "Content-Length: 0", "Content-Type", "x" * 4300 + ": 1"]
TRICKY_CONTENT = [b"\r\n", b"--", b"\r\n\r\n", b"\r\n--", b"\r\n--%sx", b"--%s", b"\r\n--%s--"]


def form_part(rnd, delimiter: bytes) -> bytes:
    """One file part, canonical or (one time in four) with one defect, so that most generated
    bodies take the fast path and each defect is met alone, where it decides the outcome."""
    defect = rnd.choice(DEFECTS) if rnd.random() < 1 / 4 else None
    disposition = f'form-data; name="file"; filename="{rnd.choice(FILENAMES)}"'
    if defect == "other disposition":
        disposition = rnd.choice(OTHER_DISPOSITIONS)
    name, separator = "Content-Disposition", ": "
    if defect == "lower-case name":
        name = rnd.choice(["content-disposition", "CONTENT-DISPOSITION"])
    if defect == "separator":
        separator = rnd.choice([":", ":\t", " : ", ":  "])
    headers = [] if defect == "no disposition" else [f"{name}{separator}{disposition}"]
    if rnd.random() < 0.5:
        headers.append("Content-Type: image/png")
    if defect == "extra header":
        headers.insert(rnd.randint(0, len(headers)), rnd.choice(OTHER_HEADERS))
    if defect == "two dispositions":
        headers.append('Content-Disposition: form-data; name="g"; filename="b.png"')
    if defect == "folded header":
        headers.append(" folded continuation")
    if defect == "nine headers":
        headers += ["Content-Type: image/png"] * (9 - len(headers))
    line_end = {"LF line ends": b"\n", "CR line ends": b"\r"}.get(defect, b"\r\n")
    tail = rnd.choice([b" \r\n", b"\n", b"x"]) if defect == "delimiter tail" else b"\r\n"
    if rnd.random() < 0.3:
        content = rnd.choice(TRICKY_CONTENT).replace(b"%s", delimiter[2:])
    else:
        content = rnd.randbytes(rnd.randint(0, 24))
    return (delimiter + tail + line_end.join(h.encode() for h in headers) + line_end
            + line_end + content + b"\r\n")


@st.composite
def form_bodies(draw) -> tuple[str, bytes]:
    """A form upload of 1 to MAX_IMAGES files, most of them canonical; now and then an odd
    boundary, a preamble, a different end or a body cut short."""
    rnd = draw(st.randoms(use_true_random=True))
    odd = rnd.random() < 0.1
    boundary = rnd.choice(ODD_BOUNDARIES if odd else CANONICAL_BOUNDARIES)
    delimiter = b"--" + boundary.encode()
    body = rnd.choice([b"\r\n", b"preamble\r\n"]) if rnd.random() < 0.05 else b""
    count = rnd.randint(0, MAX_IMAGES + 2) if rnd.random() < 0.1 else rnd.randint(1, MAX_IMAGES)
    body += b"".join(form_part(rnd, delimiter) for _ in range(count)) + delimiter
    ends = [b"--", b"--epilogue", b"", b"\r\n", b"-"]
    body += rnd.choice(ends) if rnd.random() < 0.1 else b"--\r\n"
    if rnd.random() < 0.05:
        body = body[:rnd.randint(0, len(body))]
    return f"multipart/form-data; boundary={boundary}", body


def outcome(content_type: str, body: bytes) -> tuple:
    try:
        images = parse_images(content_type, body, max_images=MAX_IMAGES)
    except ServiceError as exc:
        return "refused", exc.status_code
    return "files", [(image.filename, image.data) for image in images]


@given(form_bodies())
@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_path_never_changes_what_parse_images_answers(body_and_type):
    content_type, body = body_and_type
    with_fast_path = outcome(content_type, body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.api.parsing, "split_files", lambda *args, **kwargs: None)
        library_only = outcome(content_type, body)
    assert with_fast_path == library_only


def _httpx_form(files: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://x/predict", files=[
        ("file", (name, data, "image/png")) for name, data in files])
    content_type = request.headers["content-type"]
    return request.read(), content_type.split("boundary=")[1].encode()


def _curl_form(files: list[tuple[str, bytes]], boundary: bytes) -> bytes:
    parts = [b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
             b"Content-Type: image/png\r\n\r\n%s\r\n" % (boundary, name.encode(), data)
             for name, data in files]
    return b"".join(parts) + b"--%s--\r\n" % boundary


def test_what_clients_send_takes_the_fast_path():
    files = [("a.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))), ("b c.png", b""),
             ("\u00e9.png", b"\r\n--not-the-boundary\r\n")]
    body, boundary = _httpx_form(files)
    assert split_files(body, boundary, max_parts=8) == files
    boundary = b"------------------------d74496d66958873e"
    assert split_files(_curl_form(files, boundary), boundary, max_parts=8) == files


def test_more_parts_than_allowed_are_left_to_the_library():
    body, boundary = _httpx_form([(f"{i}.png", b"x") for i in range(3)])
    assert split_files(body, boundary, max_parts=2) is None
    assert len(split_files(body, boundary, max_parts=3)) == 3
