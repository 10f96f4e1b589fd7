"""Parsing a ``/predict`` request (``service.api.parsing``), property-based (hypothesis): any body
gives its image files or a 4xx, any query a valid top_k or a 400, and the files' bytes come
through base64 JSON and multipart exactly."""

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.parsing import MAX_TOP_K, parse_images, parse_predict_query
from service.errors import ServiceError

PROPERTY = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

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
        top_k, model, _ = parse_predict_query(query)
    except ServiceError as exc:
        assert exc.status_code == 400
        return
    assert isinstance(top_k, int) and 1 <= top_k <= MAX_TOP_K
    assert model is None or isinstance(model, str)



def test_query_defaults_and_values():
    assert parse_predict_query(b"") == (1, None, None)
    assert parse_predict_query(b"top_k=3&model=fmnist&other=x") == (3, "fmnist", None)
    assert parse_predict_query(b"version=2&model=fmnist") == (1, "fmnist", "2")
    assert parse_predict_query(b"model=") == (1, "", None)  # refused later as an invalid name
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

