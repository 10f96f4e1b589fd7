"""Hostile v2 inference requests against the real gunicorn server: shapes and datatypes that
disagree with the data, shapes past the limits or past 64 bits, lying binary lengths, BYTES
elements that are no images, ragged and nested data, unknown outputs and parameters. Each is a
4xx with the protocol's ``{"error": "..."}`` and no worker dies (``workers_survive``)."""

import base64
import json
import math
import re
import struct

import numpy as np
import pytest
from support.images import encode
from support.service import MAX_BODY, MAX_IMAGES, MODEL

pytestmark = pytest.mark.usefixtures("workers_survive")

INFER = f"/v2/models/{MODEL}/infer"
HEADER = "Inference-Header-Content-Length"
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*")


def assert_v2_error(response, status: int | tuple[int, ...]) -> str:
    """The protocol's error object and nothing else, without internals; its message."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    assert "Traceback" not in response.text and not _ABSOLUTE_PATH.search(response.text), body
    assert response.headers["x-request-id"]
    return body["error"]


def post_json(server, request, path: str = INFER):
    return server.client.post(path, content=json.dumps(request).encode())


def post_binary(server, request: dict, data: bytes, *, header: str | None = None):
    head = json.dumps(request).encode()
    length = str(len(head)) if header is None else header
    return server.client.post(INFER, content=head + data, headers={HEADER: length})


def images_tensor(data, shape=None, **extra) -> dict:
    return {"inputs": [{"name": "images", "datatype": "BYTES",
                        "shape": [len(data)] if shape is None else shape, "data": data, **extra}]}


def pixels_tensor(data, shape=(1, 1, 28, 28), datatype="UINT8") -> dict:
    return {"inputs": [{"name": "pixels", "datatype": datatype, "shape": list(shape), "data": data}]}


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.fixture(scope="module")
def png(images) -> bytes:
    return encode(images[0])


@pytest.fixture(scope="module")
def b64(png) -> str:
    return base64.b64encode(png).decode()


# ----------------------------------------------------------------------------- shape, datatype, data

@pytest.mark.parametrize("shape", [[2], [0], [1, 1], [], [-1]])
def test_bytes_shape_that_disagrees_with_the_data_is_400(server, b64, shape):
    assert_v2_error(post_json(server, images_tensor([b64], shape=shape)), 400)


@pytest.mark.parametrize("shape", [[1, 1, 28, 27], [1, 3, 28, 28], [1, 28, 28], [1, 1, 28, 28, 1],
                                   [1, 1, 2 ** 40, 2 ** 40], [1, 1, -28, -28]])
def test_pixel_shapes_other_than_the_models_input_are_400(server, shape):
    message = assert_v2_error(post_json(server, pixels_tensor([0] * 784, shape)), 400)
    assert "[N, 1, 28, 28]" in message or "unsigned" in message


@pytest.mark.parametrize("shape", [[2 ** 63], [2 ** 64 - 1], [MAX_IMAGES + 1]])
def test_batch_dimension_past_max_images_is_413(server, b64, shape):
    assert "MAX_IMAGES" in assert_v2_error(post_json(server, images_tensor([b64], shape=shape)), 413)


@pytest.mark.parametrize("shape", [[2 ** 64], [10 ** 30], [2 ** 62, 2 ** 62, 2 ** 62, 2 ** 62]])
def test_shapes_past_64_bits_or_whose_product_overflows_are_4xx(server, shape):
    assert_v2_error(post_json(server, pixels_tensor([0], shape)), (400, 413))


def test_pixel_batch_past_max_images_is_413_before_its_data_is_counted(server):
    response = post_json(server, pixels_tensor([0], (2 ** 62, 1, 28, 28)))
    assert "MAX_IMAGES" in assert_v2_error(response, 413)


@pytest.mark.parametrize("shape", [[1.5], ["1"], [True], [None], "1", {"0": 1}, [[1]]])
def test_shape_entries_that_are_not_integers_are_400(server, b64, shape):
    assert_v2_error(post_json(server, images_tensor([b64], shape=shape)), 400)


@pytest.mark.parametrize("name, datatype", [
    ("pixels", "INT64"), ("pixels", "FP16"), ("pixels", "BYTES"), ("pixels", "FLOAT"),
    ("pixels", "uint8"), ("images", "UINT8"), ("images", "STRING"), ("images", 7),
])
def test_wrong_datatypes_are_400(server, name, datatype):
    request = {"inputs": [{"name": name, "datatype": datatype, "shape": [1, 1, 28, 28], "data": [0] * 784}]}
    assert_v2_error(post_json(server, request), 400)


@pytest.mark.parametrize("value", [256, -1, 1.5, True, "7", None, [], {}, 2 ** 70])
def test_uint8_values_that_are_no_byte_are_400(server, value):
    assert_v2_error(post_json(server, pixels_tensor([value] + [0] * 783)), 400)


@pytest.mark.parametrize("value", [1.5, -0.001, 1e39, -1e400, "0.5", True, None, 10 ** 400])
def test_fp32_json_values_outside_0_1_or_not_numbers_are_400(server, value):
    assert_v2_error(post_json(server, pixels_tensor([value] + [0.0] * 783, datatype="FP32")), 400)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.0001, -1e-7, 255.0])
def test_fp32_binary_values_outside_0_1_are_400(server, bad):
    values = np.zeros(784, dtype="<f4")
    values[100] = bad
    data = values.tobytes()
    request = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, 28, 28],
                           "parameters": {"binary_data_size": len(data)}}]}
    assert "from 0 to 1" in assert_v2_error(post_binary(server, request, data), 400)


@pytest.mark.parametrize("size", [783, 785, 784 * 4 - 1, 0])
def test_binary_pixels_of_the_wrong_byte_count_are_400(server, size):
    request = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 28, 28],
                           "parameters": {"binary_data_size": size}}]}
    assert_v2_error(post_binary(server, request, b"\0" * size), 400)


# ----------------------------------------------------------------------------- nested and ragged data

@pytest.mark.parametrize("data", [
    [[[[0] * 28] * 28]] * 2,                    # nested for 2 images, shape says 1
    [[[[0] * 27] * 28]],                        # a row short
    [[[[0] * 28] * 27 + [[0] * 29]]],           # ragged rows
    [[[0] * 28] * 28],                          # one level short
    [[[[[0]] * 28] * 28]],                      # one level too deep
    [[[[0] * 28] * 28] + [0]],                  # a value beside a list
    [[0] * 392, [0] * 392],                     # half flat
    [[[[0] * 28] * 28]] + [0] * 783,            # nested and flat at once
])
def test_data_nested_unlike_the_shape_is_400(server, data):
    assert_v2_error(post_json(server, pixels_tensor(data)), 400)


@pytest.mark.parametrize("data", ["AAAA", {"b64": "AAAA"}, 7, True])
def test_data_that_is_no_array_is_400(server, data):
    assert_v2_error(post_json(server, images_tensor(data, shape=[1])), 400)


def test_data_nested_thousands_deep_is_400(server):
    deep = "[" * 5000 + "]" * 5000
    body = ('{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ' + deep + "}]}")
    assert_v2_error(server.client.post(INFER, content=body.encode()), 400)


# ----------------------------------------------------------------------------- the binary header

@pytest.mark.parametrize("header", ["-5", "abc", "", "1e3", "0x10", "12 3", "99999999999999999999999",
                                    "+10", "1.5"])
def test_header_length_that_is_no_byte_count_is_400(server, png, header):
    data = bytes_elements(png)
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": len(data)})
    assert HEADER in assert_v2_error(post_binary(server, request, data, header=header), 400)


@pytest.mark.parametrize("delta", [1, 10, 100_000, -1, -10])
def test_header_length_that_lies_about_the_json_is_400(server, png, delta):
    data = bytes_elements(png)
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": len(data)})
    length = len(json.dumps(request).encode()) + delta
    assert_v2_error(post_binary(server, request, data, header=str(length)), 400)


def test_header_length_zero_is_400(server, png):
    data = bytes_elements(png)
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": len(data)})
    assert_v2_error(post_binary(server, request, data, header="0"), 400)


@pytest.mark.parametrize("declared", [
    lambda n: n - 1, lambda n: n + 1, lambda n: 0, lambda n: -n, lambda n: 10 ** 12, lambda n: 2 ** 80,
    lambda n: str(n), lambda n: True, lambda n: float(n), lambda n: None,
], ids=["short", "long", "zero", "negative", "huge", "past-64-bits", "text", "bool", "float", "absent"])
def test_binary_data_size_that_lies_is_400(server, png, declared):
    data = bytes_elements(png)
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": declared(len(data))})
    assert_v2_error(post_binary(server, request, data), 400)


def test_binary_data_without_the_header_or_beside_json_data_is_400(server, png, b64):
    data = bytes_elements(png)
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": len(data)})
    head = json.dumps(request).encode()
    assert HEADER in assert_v2_error(server.client.post(INFER, content=head + data), 400)
    both = images_tensor([b64], parameters={"binary_data_size": len(data)})
    assert "both" in assert_v2_error(post_binary(server, both, data), 400)
    unannounced = images_tensor([b64])
    assert_v2_error(post_binary(server, unannounced, data), 400)


# ----------------------------------------------------------------------------- BYTES elements

@pytest.mark.parametrize("elements, status", [
    ([b"not an image"], 422),
    ([b""], 422),
    ([b"\x89PNG\r\n\x1a\n" + b"\0" * 40], 422),
    ([b'<svg xmlns="http://www.w3.org/2000/svg"/>'], 415),
])
def test_bytes_elements_that_are_not_images_are_4xx(server, elements, status):
    data = bytes_elements(*elements)
    request = images_tensor(None, shape=[len(elements)], parameters={"binary_data_size": len(data)})
    assert_v2_error(post_binary(server, request, data), status)


@pytest.mark.parametrize("data", [
    struct.pack("<I", 2 ** 32 - 1) + b"abc",   # claims 4 GiB
    struct.pack("<I", 100) + b"\0" * 99,       # one byte short
    b"\x05\x00",                               # a length cut in half
    struct.pack("<I", 0) * 3,                  # three elements where shape says 1
])
def test_bytes_element_lengths_that_lie_are_400(server, data):
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": len(data)})
    assert_v2_error(post_binary(server, request, data), 400)


@pytest.mark.parametrize("element", ["!!!not base64!!!", 7, None, ["AAAA"], "A"])
def test_json_bytes_elements_that_are_not_base64_text_are_400(server, element):
    assert_v2_error(post_json(server, images_tensor([element])), 400)


def test_one_bad_image_among_good_ones_refuses_the_request(server, png):
    data = bytes_elements(png, b"garbage", png)
    request = images_tensor(None, shape=[3], parameters={"binary_data_size": len(data)})
    assert "index 1" in assert_v2_error(post_binary(server, request, data), 422)


# ----------------------------------------------------------------------------- outputs, parameters, structure

@pytest.mark.parametrize("outputs", [
    [{"name": "logits"}], [{"name": "label"}, {"name": "label"}], [{"name": "LABEL"}],
    [{"name": "label", "parameters": {"classification": 3}}],
    [{"name": "label", "parameters": {"binary_data": "yes"}}],
    [{"name": "label", "extra": 1}], [{}], ["label"],
])
def test_unknown_or_malformed_outputs_are_400(server, b64, outputs):
    assert_v2_error(post_json(server, {**images_tensor([b64]), "outputs": outputs}), 400)


@pytest.mark.parametrize("parameters", [
    {"foo": 1}, {"timeout": 5}, {"priority": 1}, {"sequence_id": 3}, {"top_k": 0}, {"top_k": 11},
    {"top_k": "3"}, {"top_k": True}, {"top_k": 2.5}, {"top_k": -(2 ** 70)}, {"binary_data_output": 1},
    {"nested": {"a": 1}}, {"list": [1]}, [], "top_k",
])
def test_unknown_or_malformed_request_parameters_are_400(server, b64, parameters):
    assert_v2_error(post_json(server, {**images_tensor([b64]), "parameters": parameters}), 400)


def test_unknown_input_parameters_are_400(server, b64):
    request = images_tensor([b64], parameters={"shared_memory_region": "x"})
    assert "shared_memory_region" in assert_v2_error(post_json(server, request), 400)


@pytest.mark.parametrize("request_", [
    {}, {"inputs": []}, {"inputs": {}}, {"inputs": [{}]}, [],
    {"inputs": [{"name": "tensor", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]},
    {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1]}]},
    {"inputs": [{"name": "images", "datatype": "BYTES", "data": ["AAAA"]}]},
    {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["AAAA"], "x": 1}]},
    {"id": 42, "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]},
    {"unknown": 1, "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]},
])
def test_malformed_requests_are_400(server, request_):
    assert_v2_error(post_json(server, request_), 400)


def test_two_inputs_are_400(server, b64):
    request = {"inputs": images_tensor([b64])["inputs"] + pixels_tensor([0] * 784)["inputs"]}
    assert "exactly one input" in assert_v2_error(post_json(server, request), 400)


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe\x00", b"null", b"[1, 2]", b'{"inputs": '])
def test_bodies_that_are_no_json_object_are_400(server, body):
    assert_v2_error(server.client.post(INFER, content=body), 400)


# ----------------------------------------------------------------------------- limits, methods, paths

def test_announced_body_over_max_body_bytes_is_413(server):
    response = server.client.post(INFER, content=b"{" + b" " * MAX_BODY + b"}")
    assert "MAX_BODY_BYTES" in assert_v2_error(response, 413)


def test_more_images_than_max_images_is_413(server, b64):
    assert_v2_error(post_json(server, images_tensor([b64] * (MAX_IMAGES + 1))), 413)


def test_compressed_bodies_are_415(server, b64):
    response = server.client.post(INFER, content=json.dumps(images_tensor([b64])).encode(),
                                  headers={"Content-Encoding": "gzip"})
    assert_v2_error(response, 415)


@pytest.mark.parametrize("method, path, status", [
    ("GET", INFER, 405), ("POST", f"/v2/models/{MODEL}", 405), ("PUT", f"/v2/models/{MODEL}/ready", 405),
    ("GET", f"/v2/models/{MODEL}/config", 404), ("GET", "/v2/models/", 404),
    ("GET", f"/v2/models/{MODEL}/versions", 404), ("GET", f"/v2/models/{MODEL}/versions//ready", (400, 404)),
    ("GET", "/v2/models/no-such-model", 404), ("GET", f"/v2/models/{MODEL}/versions/99", 404),
    ("POST", f"/v2/models/{MODEL}/versions/99/infer", 404), ("GET", "/v2/models/bad%20name", 400),
    ("GET", f"/v2/models/{MODEL}/versions/abc", (400, 404)),
    ("GET", f"/v2/models/{MODEL}/versions/-1/ready", (400, 404)),
])
def test_wrong_methods_and_unknown_paths_are_4xx(server, method, path, status):
    assert_v2_error(server.client.request(method, path), status)


def test_the_worker_still_answers_after_all_that(server, png):
    data = bytes_elements(png)
    request = images_tensor(None, shape=[1], parameters={"binary_data_size": len(data)})
    response = post_binary(server, request, data)
    assert response.status_code == 200, response.text
    assert math.isclose(sum(json.loads(response.content)["outputs"][0]["data"]), 1.0, abs_tol=1e-5)
