"""App behaviour that needs to reach inside the process (slow or failing forwards, where a
request is decoded) or no server at all (settings), through Litestar's test clients. The
admin endpoints' in-process tests are in ``test_admin_inprocess.py``."""

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from litestar.testing import TestClient
from pydantic import ValidationError
from service_support import (
    MODEL,
    band_images,
    encode,
    inprocess_settings,
    reference_probabilities,
    wait_ready,
)

from service.api.parsing import PredictRequest
from service.app import create_app
from service.inference.loading import warmup_sizes
from service.inference.predictor import Predictor
from service.inference.runner import BatchRunner
from service.settings import Settings
from service.workers.core_share import usable_cores

PNG = encode(band_images(1, seed=2)[0][0])


def _post(client):
    return client.post("/predict", content=PNG, headers={"Content-Type": "image/png"})


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
        responses = list(pool.map(lambda _: _post(client), range(6)))
        counted = _refusals_counted(client) - counted_before
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"] == "overloaded" and refused.headers["retry-after"] == "1"
    assert "MAX_QUEUE" in refused.json()["detail"]
    # Refused at the door or after the body was read, a 503 is counted under /predict.
    assert counted == statuses.count(503)


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
        failed = _post(client)
        assert failed.status_code == 500 and failed.json()["error"] == "inference_failed"
        assert "Traceback" not in failed.text
        assert _post(client).status_code == 200


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    monkeypatch.setenv("ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("MODEL_NAME", "a, b")
    monkeypatch.setenv("MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    settings = Settings()
    assert settings.admin_token.get_secret_value() == "from-a-file"
    assert settings.model_names == ["a", "b"] and settings.default_model == "a"
    assert settings.max_batch_size == 16
    assert settings.resolved_torch_threads == max(1, usable_cores() // 2)
    monkeypatch.setenv("ADMIN_TOKEN", "direct")
    assert Settings().admin_token.get_secret_value() == "direct"


@pytest.mark.parametrize(("name", "value"), [("MODEL_NAME", "../etc"), ("DEVICE", "tpu"),
                                             ("MAX_BATCH_SIZE", "0"), ("TOP_SECRET", None)])
def test_bad_settings_fail_at_startup_naming_the_variable(monkeypatch, name, value):
    if value is None:
        Settings()  # unknown variables are ignored: the environment is shared
        return
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_multiple_models_are_served_by_name(trained_registry):
    settings = inprocess_settings(trained_registry, model_name=f"{MODEL},absent")
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while not client.get("/models").json()["models"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _post(client).json()["model"] == MODEL  # the first name is the default
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


def test_auto_precision_is_bf16_only_for_convolutions_on_native_bf16_cpus():
    import models
    from artifacts.devices import cpu_has_bf16, serving_dtype

    cpu = torch.device("cpu")
    mlp = models.build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28))
    cnn = models.build_model("cnn", num_classes=10, in_channels=1, image_size=(28, 28))
    assert serving_dtype("auto", cpu, mlp) == torch.float32
    assert serving_dtype("auto", cpu, cnn) == (
        torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert serving_dtype("fp32", cpu, cnn) == torch.float32
    assert serving_dtype("bf16", cpu, mlp) == torch.bfloat16


def test_cuda_warms_every_batch_size_the_batcher_can_form():
    assert warmup_sizes(torch.device("cuda"), 4) == [1, 2, 3, 4]
    big = warmup_sizes(torch.device("cuda"), 1000)  # every size to 256, then powers of two
    assert big == [*range(1, 257), 512, 1000]
    assert warmup_sizes(torch.device("cpu"), 64) == [1, 64]
    assert warmup_sizes(torch.device("cpu"), 1) == [1]


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
        assert _post(client).status_code == 200
    assert decoded_on[(2048, 2048)].startswith("decode")
    assert decoded_on[(28, 28)].startswith("inference")


def test_a_request_handed_back_to_the_decode_pool_is_not_refused_when_it_queues_again(
        registry_copy):
    import asyncio

    from PIL import Image as PILImage

    from service.inference.loading import load_model

    big = encode(PILImage.new("L", (4000, 4000)))  # 16 Mpx, ~60 ms to decode in the pool
    settings = inprocess_settings(registry_copy, max_queue=4, max_batch_size=4,
                                  max_batch_wait_ms=0)

    async def main():
        predictor = Predictor(settings)
        await predictor.start()
        loaded = load_model(registry_copy, MODEL, None, device=torch.device("cpu"),
                            warmup_batch=4)
        forward = loaded.model.forward
        loaded.model.forward = lambda x: (time.sleep(0.3), forward(x))[1]  # a busy worker
        predictor.install(predictor.slot(None), loaded)

        async def request(*data):
            await predictor.predict(json_predict_request(*data))
            return 200

        try:
            first = asyncio.create_task(request(big))  # admitted to an empty queue
            others = []
            for _ in range(2):  # while it is decoded in the pool: one batch runs, one queues
                await asyncio.sleep(0.015)
                others.append(asyncio.create_task(request(PNG, PNG, PNG, PNG)))
            return await first, await asyncio.gather(*others, return_exceptions=True)
        finally:
            await predictor.stop()

    status, _ = asyncio.run(main())
    assert status == 200  # not a 503 after its decode was done: it was admitted once


def json_predict_request(*images: bytes) -> PredictRequest:
    """A ``/predict`` of ``images`` as base64 JSON, its body ready to be received."""
    body = json.dumps({"images": [base64.b64encode(data).decode() for data in images]}).encode()

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return PredictRequest(top_k=1, model=None, content_type="application/json",
                          announced_bytes=len(body), receive=receive)


def test_the_replaced_decode_inline_bytes_setting_is_reported_not_silently_ignored(
        registry_copy, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("DECODE_INLINE_BYTES", "1000000")
    with caplog.at_level(logging.WARNING, logger="service.app"):
        create_app(inprocess_settings(registry_copy))
    assert "DECODE_INLINE_PIXELS" in caplog.text
