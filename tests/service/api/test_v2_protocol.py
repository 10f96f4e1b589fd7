"""The Open Inference Protocol v2 against the real gunicorn server (2 workers), spoken by a
client nobody on this team wrote: NVIDIA's ``tritonclient[http]``, unmodified, and requests
shaped exactly as KServe's and Triton's documented examples. Every answer must equal what
``/predict`` answers for the same images."""

import json
import struct

import httpx
import numpy as np
import pytest
import tritonclient.http as tritonclient_http  # the dev extra's: these tests must run in CI
from PIL import Image
from support.images import band_images, encode
from support.service import MODEL
from tritonclient.utils import InferenceServerException

from artifacts.preprocess import InputSpec, image_to_pixels
from service.api.v2 import tensors
from service.schemas import V2InferenceResponse, V2ModelMetadata, V2RequestInput, V2ServerMetadata

CLASSES = 10
COUNT = 6


@pytest.fixture(scope="module")
def server(start_server, trained_registry):
    server = start_server(trained_registry, MAX_BATCH_WAIT_MS="5", MAX_IMAGES="16")
    server.wait_live()
    server.wait_versions(1)
    return server


@pytest.fixture(scope="module")
def triton(server):
    client = tritonclient_http.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def images():
    return band_images(COUNT, seed=7)[0]  # uint8 (N, 28, 28)


@pytest.fixture(scope="module")
def files(images):
    return [encode(image) for image in images]


@pytest.fixture(scope="module")
def predicted(server, files):
    """What /predict answers for the same files: labels, and probabilities in class order."""
    multipart = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]
    response = server.client.post("/predict", params={"top_k": CLASSES}, files=multipart)
    assert response.status_code == 200, response.text
    probabilities = np.zeros((len(files), CLASSES), dtype=np.float64)
    labels = []
    for row, prediction in enumerate(response.json()["predictions"]):
        labels.append(prediction["label"])
        for entry in prediction["top_k"]:
            probabilities[row, entry["index"]] = entry["score"]
    return labels, probabilities


def _bytes_input(files: list[bytes], binary: bool = True):
    tensor = tritonclient_http.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=binary)
    return tensor


def _labels(result) -> list[str]:
    """BYTES elements: bytes when they came as binary data, str from the JSON."""
    return [label.decode() if isinstance(label, bytes) else label
            for label in result.as_numpy("label")]


def test_tritonclient_health_and_server_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready("no-such-model")
    assert not triton.is_model_ready(MODEL, "99")
    metadata = triton.get_server_metadata()
    V2ServerMetadata.model_validate(metadata)
    assert metadata["name"] == "imgclf" and "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("version", ["", "1"])
def test_tritonclient_model_metadata_describes_the_artifact(triton, version):
    metadata = triton.get_model_metadata(MODEL, version)
    V2ModelMetadata.model_validate(metadata)
    assert metadata["name"] == MODEL and "1" in metadata["versions"]
    assert metadata["platform"] == "pytorch_statedict"
    assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]} == {
        "images": ("BYTES", [-1]), "pixels": ("UINT8", [-1, 1, 28, 28])}
    assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["outputs"]} == {
        "probabilities": ("FP32", [-1, CLASSES]), "label": ("BYTES", [-1])}


def test_tritonclient_bytes_with_binary_data_equals_predict(triton, files, predicted):
    result = triton.infer(MODEL, [_bytes_input(files)])  # no outputs named: all, in binary
    labels, probabilities = predicted
    assert _labels(result) == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (MODEL, "1")
    assert all("data" not in output for output in response["outputs"])  # all after the JSON


def test_tritonclient_uint8_pixels_in_binary_equal_predict(triton, images, predicted):
    pixels = tritonclient_http.InferInput("pixels", [COUNT, 1, 28, 28], "UINT8")
    pixels.set_data_from_numpy(images.reshape(COUNT, 1, 28, 28), binary_data=True)
    outputs = [tritonclient_http.InferRequestedOutput("label", binary_data=True),
               tritonclient_http.InferRequestedOutput("probabilities", binary_data=True)]
    result = triton.infer(MODEL, [pixels], outputs=outputs, model_version="1")
    labels, probabilities = predicted
    assert _labels(result) == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_tritonclient_json_data_equals_predict(triton, images, predicted, datatype):
    """Input and outputs in the JSON (binary_data=False); FP32 pixels are ToTensor's 0-1."""
    array = images.reshape(COUNT, 1, 28, 28)
    if datatype == "FP32":
        array = array.astype(np.float32) / np.float32(255.0)
    pixels = tritonclient_http.InferInput("pixels", [COUNT, 1, 28, 28], datatype)
    pixels.set_data_from_numpy(array, binary_data=False)
    outputs = [tritonclient_http.InferRequestedOutput(name, binary_data=False)
               for name in ("probabilities", "label")]
    result = triton.infer(MODEL, [pixels], outputs=outputs, request_id="json-1")
    labels, probabilities = predicted
    assert _labels(result) == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    response = result.get_response()
    assert response["id"] == "json-1"
    assert all("data" in output for output in response["outputs"])


def test_tritonclient_top_k_and_requested_outputs(triton, files, predicted):
    """top_k=3 keeps each image's 3 best probabilities in class order, 0 for the others; only
    the output asked for comes back."""
    outputs = [tritonclient_http.InferRequestedOutput("probabilities")]
    result = triton.infer(MODEL, [_bytes_input(files)], outputs=outputs, parameters={"top_k": 3})
    assert result.as_numpy("label") is None
    got = result.as_numpy("probabilities")
    expected = predicted[1]
    for row, want in zip(got, expected, strict=True):
        best = np.argsort(-want)[:3]
        assert set(np.flatnonzero(row)) == set(best)
        np.testing.assert_allclose(row[best], want[best], atol=1e-6)


def test_tritonclient_sees_protocol_errors(triton, files):
    with pytest.raises(InferenceServerException) as unknown:
        triton.infer("no-such-model", [_bytes_input(files)])
    assert unknown.value.status() == "404" and "no-such-model" in unknown.value.message()
    with pytest.raises(InferenceServerException) as not_an_image:
        triton.infer(MODEL, [_bytes_input([b"not an image"])])
    assert not_an_image.value.status() == "422" and "image 0" in not_an_image.value.message()
    with pytest.raises(InferenceServerException) as unknown_output:
        triton.infer(MODEL, [_bytes_input(files)],
                     outputs=[tritonclient_http.InferRequestedOutput("logits")])
    assert unknown_output.value.status() == "400" and "probabilities" in unknown_output.value.message()


def test_kserve_documented_json_request(server, images, predicted):
    """The shape of KServe's documented JSON example (id, inputs with nested data, outputs by
    name), sent with httpx: the answer is the documented response object."""
    request = {
        "id": "42",
        "inputs": [{"name": "pixels", "shape": [2, 1, 28, 28], "datatype": "UINT8",
                    "data": images[:2].reshape(2, 1, 28, 28).tolist()}],
        "outputs": [{"name": "label"}],
    }
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=request, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = V2InferenceResponse.model_validate_json(response.content)
    assert (body.id, body.model_name, body.model_version) == ("42", MODEL, "1")
    (label,) = body.outputs
    assert (label.name, label.datatype, label.shape) == ("label", "BYTES", [2])
    assert label.data == predicted[0][:2]


def test_triton_documented_binary_request(server, files, predicted):
    """Triton's binary tensor data example, byte for byte in form: Content-Type
    application/octet-stream, model_name in the JSON, binary input and binary output."""
    data = b"".join(struct.pack("<I", len(f)) + f for f in files[:2])
    header = json.dumps({
        "model_name": MODEL,
        "inputs": [{"name": "images", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/versions/1/infer", content=header + data,
                          headers={"Content-Type": "application/octet-stream",
                                   "Inference-Header-Content-Length": str(len(header))}, timeout=30)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    (output,) = answer["outputs"]
    assert output["shape"] == [2, CLASSES] and output["parameters"]["binary_data_size"] == 2 * CLASSES * 4
    probabilities = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, CLASSES)
    np.testing.assert_allclose(probabilities, predicted[1][:2], atol=1e-6)


def test_v2_errors_are_the_protocol_object_and_predict_keeps_its_own(server):
    v2 = server.client.post(f"/v2/models/{MODEL}/infer", content=b"{}")
    assert v2.status_code == 400 and list(v2.json()) == ["error"] and v2.json()["error"]
    predict = server.client.post("/predict", content=b"{}", headers={"Content-Type": "application/json"})
    assert predict.status_code == 400 and {"error", "detail", "request_id"} <= set(predict.json())


def test_health_answers_have_empty_bodies(server):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        response = server.client.get(path)
        assert (response.status_code, response.content) == (200, b""), path


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
def test_rgb_pixels_reach_the_batcher_as_decoded_images_do(datatype):
    """[N, C, H, W] from the client -> per image H*W*C, channels interleaved: exactly the bytes
    ``image_to_pixels`` makes of the same picture (the test server's model is grayscale)."""
    spec = InputSpec(3, 4, 5, (0.5,) * 3, (0.25,) * 3)
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)  # (N, H, W, C) as PIL holds them
    chw = pictures.transpose(0, 3, 1, 2)  # (N, C, H, W) as a torch client sends them
    data = chw.tobytes() if datatype == "UINT8" else (chw.astype("<f4") / np.float32(255)).tobytes()
    tensor = V2RequestInput(name="pixels", shape=[2, 3, 4, 5], datatype=datatype)
    got = tensors.pixels(tensor, data, spec=spec, max_images=8)
    assert got == [image_to_pixels(Image.fromarray(picture), spec=spec) for picture in pictures]
