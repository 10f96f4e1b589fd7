"""The app in process, through Litestar's test client, where a test reaches inside (slow or
failing forwards, where a request is decoded) or needs no server: queue refusals, forward
failures, several models, precisions. The admin endpoints' are in api/test_admin.py."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from litestar.testing import TestClient
from support.images import band_images, encode
from support.service import MODEL, inprocess_settings, post_raw, reference_probabilities, wait_ready

from service.app import create_app
from service.inference.predictor import Predictor
from service.inference.runner import BatchRunner

PNG = encode(band_images(1, seed=2)[0][0])


def test_full_queue_answers_503_with_retry_after(registry_copy, monkeypatch):
    original = BatchRunner.__call__

    def slow(self, loaded, payloads):
        time.sleep(0.3)
        return original(self, loaded, payloads)

    monkeypatch.setattr(BatchRunner, "__call__", slow)
    app = create_app(inprocess_settings(registry_copy, max_queue=1, max_batch_size=1))
    with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
        wait_ready(client)  # concurrent callers share the client's event loop thread
        counted_before = _refusals_counted(client)
        responses = list(pool.map(lambda _: post_raw(client, PNG), range(6)))
        counted = _refusals_counted(client) - counted_before
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"] == "overloaded" and refused.headers["retry-after"] == "1"
    assert "MAX_QUEUE" in refused.json()["detail"]
    # Refused at the door or after the body was read, a 503 is counted under /predict.
    assert counted == statuses.count(503)


def test_an_overloaded_worker_refuses_the_default_model_before_routing(registry_copy,
                                                                       monkeypatch):
    """At the door (service.api.shedding): same JSON, Retry-After, request id and metrics as a
    refusal by the predictor, but neither the route nor the predictor runs. A request naming the
    model takes the normal path and is refused there."""
    from service.inference.batcher import MicroBatcher

    app = create_app(inprocess_settings(registry_copy))
    with TestClient(app) as client:
        wait_ready(client)
        before = _refusals_counted(client)
        reached = []
        original_predict = Predictor.predict

        async def predict(self, request):
            reached.append(request.model)
            return await original_predict(self, request)

        monkeypatch.setattr(Predictor, "predict", predict)
        monkeypatch.setattr(MicroBatcher, "refusal", lambda self, count=1: "the queue is full")
        at_door = client.post("/predict", content=PNG, headers={
            "Content-Type": "image/png", "X-Request-ID": "door-1"})
        named = post_raw(client, PNG, query=f"?model={MODEL}")
        counted = _refusals_counted(client) - before
    assert at_door.status_code == named.status_code == 503
    assert at_door.json() == {"error": "overloaded", "detail": "the queue is full",
                              "request_id": "door-1"}
    assert at_door.headers["retry-after"] == "1" and at_door.headers["x-request-id"] == "door-1"
    assert reached == [MODEL]  # only the request naming the model reached the predictor
    assert named.json()["error"] == "overloaded"
    assert counted == 2


def _refusals_counted(client) -> float:
    series = 'imgclf_http_requests_total{method="POST",route="/predict",status="503"} '
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(series)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_failing_forward_is_a_json_500_and_the_worker_goes_on(registry_copy, monkeypatch):
    original = BatchRunner.__call__
    calls = {"n": 0}

    def flaky(self, loaded, payloads):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA fell over")
        return original(self, loaded, payloads)

    monkeypatch.setattr(BatchRunner, "__call__", flaky)
    with TestClient(create_app(inprocess_settings(registry_copy))) as client:
        wait_ready(client)
        failed = post_raw(client, PNG)
        assert failed.status_code == 500 and failed.json()["error"] == "inference_failed"
        assert "Traceback" not in failed.text
        assert post_raw(client, PNG).status_code == 200


def test_multiple_models_are_served_by_name(trained_registry):
    settings = inprocess_settings(trained_registry, model_name=f"{MODEL},absent")
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while not client.get("/models").json()["models"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert post_raw(client, PNG).json()["model"] == MODEL  # the first name is the default
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "absent" in ready.json()["detail"]
        missing = client.post("/predict?model=absent", content=PNG,
                              headers={"Content-Type": "image/png"})
        assert missing.status_code == 503 and missing.json()["error"] == "model_not_ready"


def test_bf16_serving_agrees_with_the_fp32_model(trained_registry):
    """PRECISION=bf16 (what auto picks on AMX CPUs): same classes as fp32, scores within bf16's
    resolution, and /models says which precision answers."""
    arrays, _ = band_images(8, seed=11)
    expected = reference_probabilities(trained_registry, MODEL, arrays)  # fp32, in process
    settings = inprocess_settings(trained_registry, precision="bf16")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        files = [("file", (f"{i}.png", encode(a), "image/png")) for i, a in enumerate(arrays)]
        response = client.post("/predict", files=files)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["index"] for p in predictions] == expected.argmax(1).tolist()
        assert [p["score"] for p in predictions] == pytest.approx(
            expected.max(1).tolist(), abs=2e-2)
        assert client.get("/models").json()["models"][0]["precision"] == "bfloat16"


def test_fp16_is_refused_on_cpu_at_startup(trained_registry):
    with pytest.raises(RuntimeError, match="PRECISION=fp16 needs CUDA"):
        create_app(inprocess_settings(trained_registry, precision="fp16"))


def test_an_idle_worker_serves_a_request_larger_than_its_queue_whole(registry_copy):
    app = create_app(inprocess_settings(registry_copy, max_queue=8, max_batch_size=4))
    with TestClient(app) as client:
        wait_ready(client)
        files = [("file", (f"{i}.png", PNG, "image/png")) for i in range(12)]  # 3 batches
        response = client.post("/predict", files=files)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 12


def test_images_with_many_pixels_are_decoded_off_the_inference_thread(registry_copy,
                                                                        monkeypatch):
    """A blank 2048x2048 PNG is ~12 KB but 4 Mpx (~20 ms) to decode: counted by its bytes it
    would be decoded on the inference thread, holding up everyone's batch."""
    import threading

    from PIL import Image as PILImage

    import service.inference.imaging as imaging

    decoded_on: dict[tuple[int, int], str] = {}
    original = imaging.image_pixels

    def recording(image, *, spec):
        decoded_on[image.size] = threading.current_thread().name
        return original(image, spec=spec)

    monkeypatch.setattr(imaging, "image_pixels", recording)
    blank = encode(PILImage.new("L", (2048, 2048)))
    assert len(blank) < 64 * 1024
    with TestClient(create_app(inprocess_settings(registry_copy))) as client:
        wait_ready(client)
        files = [("file", (f"{i}.png", blank, "image/png")) for i in range(2)]
        assert client.post("/predict", files=files).status_code == 200
        assert post_raw(client, PNG).status_code == 200
    assert decoded_on[(2048, 2048)].startswith("decode")
    assert decoded_on[(28, 28)].startswith("inference")


def test_the_replaced_decode_inline_bytes_setting_is_reported_not_silently_ignored(
        registry_copy, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("DECODE_INLINE_BYTES", "1000000")
    with caplog.at_level(logging.WARNING, logger="service.app"):
        create_app(inprocess_settings(registry_copy))
    assert "DECODE_INLINE_PIXELS" in caplog.text
