"""What POST /feedback accepts (service.feedback.intake) and how its bodies are split
(service.api.parsing.parse_upload with text fields): in process, no server."""

import hashlib

import numpy as np
import pytest
from PIL import Image
from support.bombs import png_bomb
from support.images import encode

from artifacts.preprocess import InputSpec
from service.api.parsing import MAX_FIELD_BYTES, parse_images, parse_upload
from service.errors import BadRequestError, InvalidFeedbackImageError, UnknownLabelError
from service.feedback.intake import check_images, check_label, check_request_id, one_value
from service.inference.imaging import RawImage
from service.schemas import FeedbackJsonRequest

SPEC = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.5,))
LABELS = ["T-shirt/top", "Trouser", "Sneaker"]
PIXELS = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)


def multipart_body(*parts: tuple[str, str | None, bytes]) -> tuple[str, bytes]:
    """(content type, body) of (name, filename or None for a text field, data) parts."""
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(b"--XyZ\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + data + b"\r\n")
    return "multipart/form-data; boundary=XyZ", b"".join(chunks) + b"--XyZ--\r\n"


def test_the_extension_comes_from_the_decoded_format_not_the_file_name():
    jpeg, png = encode(PIXELS, "JPEG"), encode(PIXELS)
    checked = check_images([RawImage("shoe.png", jpeg), RawImage("shoe.jpg", png)], spec=SPEC,
                           max_pixels=10_000)
    assert [c.extension for c in checked] == ["jpg", "png"]
    assert checked[0].sha256 == hashlib.sha256(jpeg).hexdigest() and checked[0].data == jpeg


def test_every_bad_image_is_named_and_nothing_is_accepted():
    good = encode(PIXELS)
    files = [RawImage("ok.png", good), RawImage("cut.png", good[: len(good) // 2]),
             RawImage("big.png", png_bomb(200, 200)), RawImage("x.svg", b"<svg></svg>")]
    with pytest.raises(InvalidFeedbackImageError) as caught:
        check_images(files, spec=SPEC, max_pixels=10_000)
    error = caught.value
    assert "nothing was stored" in error.detail and error.status_code == 422
    assert [(p["index"], p["status"]) for p in error.extra["problems"]] == [(1, 422), (2, 413), (3, 415)]


def test_an_image_that_converts_to_the_model_input_is_accepted_whatever_its_mode():
    rgba = encode(Image.new("RGBA", (40, 30), (200, 10, 10, 128)))
    (checked,) = check_images([RawImage(None, rgba)], spec=SPEC, max_pixels=10_000)
    assert checked.extension == "png"


def test_labels_must_be_given_once_and_be_a_class():
    assert check_label("T-shirt/top", LABELS, model="m", version="2") == "T-shirt/top"
    with pytest.raises(BadRequestError, match="no label"):
        check_label(None, LABELS, model="m", version="2")
    with pytest.raises(UnknownLabelError) as caught:
        check_label("t-shirt/top", LABELS, model="m", version="2")
    assert caught.value.extra["valid_labels"] == LABELS and "Sneaker" in caught.value.detail
    assert one_value("label", None, "Trouser") == one_value("label", "Trouser", None) == "Trouser"
    with pytest.raises(BadRequestError, match="both in the query and in the body"):
        one_value("label", "Trouser", "Trouser")


@pytest.mark.parametrize("request_id", ["", "a b", "x" * 65, "line\nbreak", "é"])
def test_a_request_id_outside_the_services_own_shape_is_400(request_id):
    with pytest.raises(BadRequestError):
        check_request_id(request_id)


def test_multipart_text_fields_are_read_only_where_asked_for():
    content_type, body = multipart_body(("file", "a.png", b"A"), ("label", None, b"T-shirt/top"),
                                        ("file", "b.png", b"B"), ("request_id", None, b"abc"))
    upload = parse_upload(content_type, body, max_images=4, fields=("label", "request_id"))
    assert [i.data for i in upload.images] == [b"A", b"B"]
    assert upload.fields == {"label": "T-shirt/top", "request_id": "abc"}
    with pytest.raises(BadRequestError, match="'label' is not a file"):  # /predict: unchanged
        parse_images(content_type, body, max_images=4)


@pytest.mark.parametrize(("parts", "message"), [
    ([("label", None, b"a"), ("label", None, b"b")], "more than once"),
    ([("label", None, b"x" * (MAX_FIELD_BYTES + 1))], "longer than"),
    ([("label", None, b"\xff\xfe")], "not UTF-8"),
    ([("note", None, b"hello")], "text fields accepted here: label"),
])
def test_bad_multipart_text_fields_are_400(parts, message):
    content_type, body = multipart_body(("file", "a.png", b"A"), *parts)
    with pytest.raises(BadRequestError, match=message):
        parse_upload(content_type, body, max_images=4, fields=("label",))


def test_json_fields_come_from_the_json_model():
    body = b'{"images": ["QQ=="], "label": "Trouser", "request_id": "r1"}'
    upload = parse_upload("application/json", body, max_images=4, fields=("label", "request_id"),
                          json_model=FeedbackJsonRequest)
    assert upload.fields == {"label": "Trouser", "request_id": "r1"} and upload.images[0].data == b"A"
    with pytest.raises(BadRequestError, match="label"):
        parse_upload("application/json", b'{"images": ["QQ=="], "label": 3}', max_images=4,
                     fields=("label",), json_model=FeedbackJsonRequest)


def test_a_raw_image_body_carries_no_field_and_too_many_images_are_413():
    assert parse_upload("image/png", b"A", max_images=1, fields=("label",)).fields == {}
    content_type, body = multipart_body(*[("file", f"{i}.png", b"A") for i in range(3)],
                                        ("label", None, b"Trouser"))
    with pytest.raises(Exception) as caught:
        parse_upload(content_type, body, max_images=2, fields=("label", "request_id"))
    assert caught.value.status_code == 413
