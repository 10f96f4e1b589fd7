"""``POST /predict?version=V`` against the real gunicorn server (one worker, so that every
request meets the same per-worker LRU): any published version answers, loaded on first use
without holding up production's requests; unknown, pruned and tampered versions are refused
with the reason."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.images import band_images, encode
from support.service import MODEL, assert_clean_error, publish_rolled, republish

from artifacts import production
from artifacts.registry import load_artifact, publish
from models import build_model

SLOW_SIZE = 224  # a ResNet-18 on 224x224 inputs: its warm-up at MAX_BATCH_SIZE takes seconds


def _metadata(reg: Path) -> dict:
    metadata = load_artifact(reg, MODEL, "1").metadata
    return {k: v for k, v in metadata.items()
            if k not in ("version", "created_at", "weights_sha256", "files")}


def publish_slow(reg: Path) -> str:
    """An untrained ResNet-18 on 224x224 greyscale inputs, with version 1's labels: a version
    whose first load takes seconds on a CPU."""
    metadata = _metadata(reg)
    metadata |= {"architecture": "resnet18", "architecture_kwargs": {},
                 "input": metadata["input"] | {"height": SLOW_SIZE, "width": SLOW_SIZE}}
    model = build_model("resnet18", num_classes=len(metadata["class_labels"]), in_channels=1,
                        image_size=(SLOW_SIZE, SLOW_SIZE))
    return publish(reg, metadata, model.state_dict())


@pytest.fixture(scope="module")
def registry(trained_registry, tmp_path_factory) -> Path:
    """Versions 1 (trained), 2 (rolled, production), 3 (slow), 4 (tampered), 5 (to prune)."""
    reg = Path(shutil.copytree(trained_registry, tmp_path_factory.mktemp("versions") / "registry"))
    assert publish_rolled(reg) == "2"
    production.promote(reg, MODEL, "2")
    assert publish_slow(reg) == "3"
    assert republish(reg) == "4"
    weights = reg / MODEL / "4" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    assert republish(reg) == "5"
    return reg


@pytest.fixture(scope="module")
def server(start_server, registry):
    server = start_server(registry, WEB_CONCURRENCY="1", MAX_LOADED_VERSIONS="3")
    server.wait_live()
    server.wait_versions(2, workers=1)
    return server


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(band_images(1, seed=3)[0][0])


def _post(client, png: bytes, query: str = ""):
    return client.post(f"/predict{query}", content=png, headers={"Content-Type": "image/png"})


def _loads(server, outcome: str) -> float:
    return sum(server.metric(
        rf'^imgclf_version_loads_total\{{.*model="{MODEL}".*outcome="{outcome}"'))


def test_predict_any_version_answers_with_that_version_while_production_is_2(server, png):
    default, one, two = (_post(server.client, png, query).json()
                         for query in ("", "?version=1", f"?model={MODEL}&version=2"))
    assert (default["version"], one["version"], two["version"]) == ("2", "1", "2")
    assert two == default
    assert two["predictions"][0]["index"] == (one["predictions"][0]["index"] + 1) % 10
    assert two["predictions"][0]["score"] == pytest.approx(one["predictions"][0]["score"])
    [info] = server.client.get("/models").json()["models"]
    assert info["version"] == "2" and "1" in info["other_loaded_versions"]


def test_a_slow_first_load_does_not_delay_production_requests(server, png):
    """Two requests for version 3 share its one load (seconds: a ResNet-18 warming up at
    224x224), while production's requests to the same worker keep answering at their usual
    pace: the load runs on the loader thread, never on the inference thread or the loop."""
    loaded = _loads(server, "loaded")
    latencies = []
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        slow = [pool.submit(_post, server.fresh(), png, "?version=3") for _ in range(2)]
        while not all(future.done() for future in slow):
            sent = time.perf_counter()
            answer = _post(server.client, png)
            latencies.append(time.perf_counter() - sent)
            assert answer.status_code == 200 and answer.json()["version"] == "2", answer.text
        slow_latency = time.perf_counter() - started
    assert [future.result().json()["version"] for future in slow] == ["3", "3"]
    assert _loads(server, "loaded") == loaded + 1
    assert len(latencies) >= 10, (latencies, slow_latency)
    assert max(latencies) < slow_latency / 4, (max(latencies), slow_latency)


def test_an_unknown_version_is_404_listing_the_available_ones(server, png):
    body = assert_clean_error(_post(server.client, png, "?version=99"), 404)
    assert body["error"] == "unknown_version" and "available versions: 1, 2, 3" in body["detail"]
    assert {"1", "2", "3", "5"} <= set(body["available_versions"])
    body = assert_clean_error(_post(server.client, png, "?version=two"), 400)
    assert "positive integers" in body["detail"]


def test_a_pruned_version_answers_404_and_is_unloaded(server, registry, png):
    assert _post(server.client, png, "?version=5").json()["version"] == "5"
    shutil.rmtree(registry / MODEL / "5")
    deadline = time.monotonic() + 10  # the worker lists the registry at most every second
    while (answer := _post(server.client, png, "?version=5")).status_code == 200:
        assert time.monotonic() < deadline, "a pruned version is still served"
        time.sleep(0.1)
    body = assert_clean_error(answer, 404)
    assert "5" not in body["available_versions"]
    [info] = server.client.get("/models").json()["models"]
    assert "5" not in info["other_loaded_versions"]


def test_a_tampered_version_is_refused_and_production_serves_on(server, png):
    refused = _loads(server, "refused")
    for _ in range(2):
        body = assert_clean_error(_post(server.client, png, "?version=4"), 422)
        assert body["error"] == "version_refused" and "sha256" in body["detail"], body
    assert _loads(server, "refused") == refused + 1  # remembered: not loaded again
    assert _post(server.client, png).json()["version"] == "2"
    ready = server.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["detail"] is None  # production is fine
