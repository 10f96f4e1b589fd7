"""What the service tests share: the model they serve, the admin token, reference scores of
the trained model, the JSON error contract, in-process apps and requests, the worker table."""

import base64
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from artifacts.preprocess import EvalTransform
from artifacts.registry import load_artifact, publish
from service.api.body_budget import BodyBudget
from service.api.parsing import PredictRequest
from service.workers.worker_table import WorkerTable

MODEL = "fmnist"
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Limits of the test_hostile_* server (tests/service/conftest.py ``server``): small, so that
# "over the limit" is cheap to send.
MAX_BODY = 1024 * 1024
MAX_IMAGES = 16


def reference_probabilities(registry: Path, name: str, images: np.ndarray,
                            version: str | None = None) -> np.ndarray:
    """What training evaluation computes for uint8 (N, H, W) images: softmax (N, classes)."""
    artifact = load_artifact(registry, name, version)
    batch = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
    with torch.inference_mode():
        logits = artifact.model(EvalTransform(spec=artifact.input_spec)(batch))
    return logits.softmax(dim=1).numpy()


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*")


def assert_clean_error(response: httpx.Response, status: int | tuple[int, ...]) -> dict:
    """The JSON error contract, without internals: no traceback, no file system paths."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    body = response.json()
    assert body["error"] and body["detail"] and body["request_id"], body
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert not _ABSOLUTE_PATH.search(response.text), response.text[:500]
    return body


def publish_rolled(reg: Path, version: str = "1") -> str:
    """Publish ``version``'s weights with the output rows rolled by one, as a new version (no
    golden set): it answers class ``(c + 1) % classes`` where ``version`` answers ``c``."""
    artifact = load_artifact(reg, MODEL, version)
    state = artifact.model.state_dict()
    classes = len(artifact.class_labels)
    for key in [key for key, tensor in state.items() if tensor.shape[:1] == (classes,)][-2:]:
        state[key] = state[key].roll(1, dims=0)  # the head's weight and bias
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    return publish(reg, metadata, state)


def republish(reg: Path, version: str = "1", **metadata_changes) -> str:
    """Publish ``version``'s weights again as a new version (``metadata_changes`` applied),
    like a new training run of the same model; returns the new version."""
    artifact = load_artifact(reg, MODEL, version)
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256")} | metadata_changes
    return publish(reg, metadata, artifact.model.state_dict())


def inprocess_settings(reg: Path, **overrides):
    """Settings for an in-process app (Litestar's TestClient) on ``reg``: one thread, fast polls."""
    from service.settings import Settings

    values = {"model_registry": reg, "model_name": MODEL, "torch_threads": 1,
              "reload_interval_s": 0.2, "device": "cpu", "precision": "fp32"} | overrides
    return Settings(**values)


def wait_ready(client) -> None:
    """Poll an in-process client until the model is loaded (30 s at most)."""
    deadline = time.monotonic() + 30
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "model never loaded"
        time.sleep(0.05)


def json_predict_request(*images: bytes, top_k: int = 1) -> PredictRequest:
    """A ``/predict`` of ``images`` as base64 JSON, its body ready to be received: what the
    route hands ``Predictor.predict``."""
    body = json.dumps({"images": [base64.b64encode(data).decode() for data in images]}).encode()

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return PredictRequest(top_k=top_k, model=None, version=None, content_type="application/json",
                          announced_bytes=len(body), receive=receive,
                          budget=BodyBudget(64 << 20, max_body=16 << 20))


def short_ids(values) -> list[str]:
    """Short test ids for long byte-string parameters."""
    return [f"{i}:{v[:16]!r}" for i, v in enumerate(values)]


def post_raw(client, data: bytes, content_type: str = "image/png", query: str = ""):
    """``POST /predict{query}`` with ``data`` as the raw body, through an httpx client or
    Litestar's TestClient."""
    return client.post(f"/predict{query}", content=data, headers={"Content-Type": content_type})


def top_index(response) -> int:
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["index"]


def table_of(workers: int) -> WorkerTable:
    """A table of the gunicorn workers whose first ``workers`` slots were handed out, as the
    master does."""
    table = WorkerTable(workers + 2)
    for slot in range(workers):
        assert table.free_slot(set(range(slot))) == slot
    return table
