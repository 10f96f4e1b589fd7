"""POST /predict and the read-only endpoints against the real gunicorn server (2 workers)."""

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from support.bombs import png_bomb
from support.images import band_images, encode
from support.service import MODEL, TOKEN, reference_probabilities

from service.schemas import PredictResponse

MAX_IMAGES, MAX_PIXELS, MAX_BODY = 8, 200 * 200, 100_000


@pytest.fixture(scope="module")
def server(start_server, trained_registry):
    server = start_server(
        trained_registry, MAX_IMAGES=str(MAX_IMAGES), MAX_PIXELS=str(MAX_PIXELS),
        MAX_BODY_BYTES=str(MAX_BODY), MAX_BATCH_WAIT_MS="5", ADMIN_TOKEN=TOKEN,
    )
    server.wait_live()
    server.wait_versions(1)
    return server


@pytest.fixture(scope="module")
def images():
    arrays, _ = band_images(8, seed=7)
    return arrays


@pytest.fixture(scope="module")
def expected(trained_registry, images):
    return reference_probabilities(trained_registry, MODEL, images)  # (N, classes)


def _labels(response) -> list[int]:
    return [p["index"] for p in response.json()["predictions"]]


def test_predict_raw_image_body_matches_in_process_model(server, images, expected):
    response = server.client.post(
        "/predict", content=encode(images[0]), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # The body is encoded by hand (service.schemas.predict_response_json): it must still be
    # the schema.
    assert PredictResponse.model_validate_json(response.content).model_dump() == body
    assert (body["model"], body["version"]) == (MODEL, "1")
    assert len(body["weights_sha256"]) == 64
    (prediction,) = body["predictions"]
    assert prediction["index"] == int(expected[0].argmax())
    assert prediction["score"] == pytest.approx(float(expected[0].max()), abs=1e-5)
    assert prediction["top_k"] == [{k: prediction[k] for k in ("label", "index", "score")}]
    assert response.headers["x-request-id"]


def test_predict_multipart_several_files_keeps_input_order(server, images, expected):
    files = [("file", (f"{i}.png", encode(image), "image/png")) for i, image in enumerate(images)]
    response = server.client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    assert _labels(response) == expected.argmax(1).tolist()
    assert len(set(_labels(response))) > 1  # the order is actually tested
    reversed_files = list(reversed(files))
    assert _labels(server.client.post("/predict", files=reversed_files)) == _labels(response)[::-1]


def test_predict_json_base64_accepts_data_urls(server, images, expected):
    payload = [base64.b64encode(encode(image)).decode() for image in images[:3]]
    payload[1] = "data:image/png;base64," + payload[1]
    response = server.client.post("/predict", json={"images": payload})
    assert response.status_code == 200, response.text
    assert _labels(response) == expected[:3].argmax(1).tolist()


def test_predict_top_k_returns_sorted_scores_of_distinct_classes(server, images, expected):
    response = server.client.post(
        "/predict?top_k=3", files=[("file", ("a.png", encode(images[2]), "image/png"))])
    assert PredictResponse.model_validate_json(response.content).model_dump() == response.json()
    top = response.json()["predictions"][0]["top_k"]
    assert len(top) == 3 and len({c["index"] for c in top}) == 3
    assert [c["score"] for c in top] == sorted((c["score"] for c in top), reverse=True)
    want_scores, want_indices = torch.from_numpy(expected[2]).topk(3)
    assert [c["index"] for c in top] == want_indices.tolist()
    assert [c["score"] for c in top] == pytest.approx(want_scores.tolist(), abs=1e-5)


def test_predict_jpeg_and_rgb_and_other_sizes_are_converted(server, images):
    rgb = Image.fromarray(images[3]).convert("RGB").resize((56, 40))
    for data in (encode(rgb, "JPEG", quality=95), encode(rgb, "WEBP"), encode(rgb, "BMP")):
        response = server.client.post("/predict", content=data,
                                      headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("query", ["top_k=0", "top_k=abc", "top_k=11", "top_k=-1"])
def test_predict_bad_top_k_is_400(server, images, query):
    response = server.client.post(f"/predict?{query}", content=encode(images[0]),
                                  headers={"Content-Type": "image/png"})
    assert response.status_code == 400
    assert "top_k" in response.json()["detail"]


def test_predict_unknown_or_invalid_model_names(server, images):
    png = {"content": encode(images[0]), "headers": {"Content-Type": "image/png"}}
    unknown = server.client.post("/predict?model=nope", **png)
    assert unknown.status_code == 404 and MODEL in unknown.json()["detail"]
    invalid = server.client.post("/predict?model=../etc", **png)
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid_model_name"
    assert server.client.post(f"/predict?model={MODEL}", **png).status_code == 200


def test_predict_one_bad_image_refuses_the_request_and_names_it(server, images):
    files = [("file", ("good.png", encode(images[0]), "image/png")),
             ("file", ("bad.png", b"not an image at all", "image/png")),
             ("file", ("cut.png", encode(images[1])[:60], "image/png"))]
    response = server.client.post("/predict", files=files)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_image" and body["request_id"]
    assert [(p["index"], p["filename"]) for p in body["problems"]] == [(1, "bad.png"),
                                                                      (2, "cut.png")]


def test_limits_answer_413_with_the_limit_named(server, images):
    too_many = [("file", (f"{i}.png", encode(images[0]), "image/png"))
                for i in range(MAX_IMAGES + 1)]
    response = server.client.post("/predict", files=too_many)
    assert response.status_code == 413 and "MAX_IMAGES" in response.json()["detail"]
    many_json = {"images": [base64.b64encode(encode(images[0])).decode()] * (MAX_IMAGES + 1)}
    assert server.client.post("/predict", json=many_json).status_code == 413

    noise = np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8)
    big_body = server.client.post("/predict", content=encode(noise),
                                  headers={"Content-Type": "image/png"})
    assert big_body.status_code == 413 and big_body.json()["error"] == "payload_too_large"

    pixels = server.client.post("/predict", content=encode(Image.new("L", (300, 300))),
                                headers={"Content-Type": "image/png"})
    assert pixels.status_code == 413 and "MAX_PIXELS" in pixels.json()["detail"]


def test_decompression_bomb_is_refused_from_the_header_and_the_worker_survives(server, images):
    bomb = png_bomb(50_000, 50_000)
    assert len(bomb) < MAX_BODY
    response = server.client.post("/predict", content=bomb, headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "MAX_PIXELS" in response.json()["detail"]
    assert server.client.post("/predict", content=encode(images[0]),
                              headers={"Content-Type": "image/png"}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"content": b"hello"}, 415, "unsupported_media_type"),
        ({"json": {"images": ["%%%not-base64%%%"]}}, 400, "bad_request"),
        ({"json": {"images": []}}, 400, "bad_request"),
        ({"json": {"pictures": ["aGk="]}}, 400, "bad_request"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400,
         "bad_request"),
        ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "bad_request"),
        ({"content": b"--x\r\nbroken",
          "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400, "bad_request"),
        ({"data": {"field": "value"}, "files": [("file", ("a.png", b"x", "image/png"))]}, 400,
         "bad_request"),
    ],
)
def test_bad_requests_get_json_errors(server, kwargs, status, error):
    response = server.client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["detail"] and body["request_id"]


def test_concurrent_requests_are_batched_and_counted_across_workers(server, images):
    def count(status: str) -> float:
        pattern = rf'^imgclf_http_requests_total\{{.*route="/predict".*status="{status}"'
        return sum(server.metric(pattern))

    before_ok = count("200")
    png = encode(images[4])

    # One client, 32 connections: the kernel spreads them over both workers.
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    with httpx.Client(base_url=server.url, limits=limits, timeout=30) as client, \
            ThreadPoolExecutor(32) as pool:
        statuses = [r.status_code for r in pool.map(
            lambda _: client.post("/predict", content=png, headers={"Content-Type": "image/png"}),
            range(128))]
    assert statuses == [200] * 128
    assert count("200") - before_ok == 128  # both workers' counters, summed
    batches = sum(server.metric(r'^imgclf_batch_size_images_count\{'))
    singles = sum(server.metric(r'^imgclf_batch_size_images_bucket\{.*le="1.0"'))
    assert batches > singles, "no forward pass ever held more than one image"
    for stage in ("decode", "queue_wait", "inference"):
        assert sum(server.metric(rf"^imgclf_{stage}_seconds_count")) > 0
    assert server.metric(r"^imgclf_queue_depth_images\{") == [0.0]  # livesum over workers


def test_models_health_docs_and_unknown_routes(server):
    models = server.client.get("/models").json()
    (info,) = models["models"]
    assert info["name"] == MODEL and info["version"] == "1" and info["default"] is True
    assert info["input"]["height"] == 28 and len(info["class_labels"]) == 10
    assert "test_accuracy" in info["metrics"] and info["device"] == "cpu"
    assert server.client.get("/health/live").json()["status"] == "live"
    ready = server.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == {MODEL: "1"}
    schema = server.client.get("/schema/openapi.json").json()
    operation = schema["paths"]["/predict"]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "multipart/form-data", "image/*", "application/json"}
    # The handler reads its query by hand: the schema must still document it and the answer.
    assert {p["name"] for p in operation["parameters"]} == {"top_k", "model", "version"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/PredictResponse")
    assert server.client.get("/schema/swagger").status_code == 200
    missing = server.client.get("/nowhere")
    assert missing.status_code == 404 and json.loads(missing.text)["error"] == "not_found"
