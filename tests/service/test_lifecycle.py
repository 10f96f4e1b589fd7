"""Readiness, hot reload, admin promote/rollback, a tampered artifact, across 2 real workers.

One server lives through the whole story, in order: it starts on an empty registry, picks up
the first promotion, follows a new version without failing in-flight requests, rolls back and
forward through the admin API, and refuses a tampered version while the old one keeps serving.
"""

import json
import shutil
import threading
from pathlib import Path

import pytest
from support.images import band_images, encode
from support.service import AUTH, MODEL, TOKEN, post_raw, republish

from artifacts import production, registry


@pytest.fixture(scope="module")
def story(start_server, tmp_path_factory, trained_registry):
    reg = tmp_path_factory.mktemp("lifecycle") / "registry"
    reg.mkdir()
    server = start_server(reg, ADMIN_TOKEN=TOKEN, RELOAD_INTERVAL_S="0.2")
    server.wait_live()
    png = encode(band_images(1, seed=3)[0][0])
    return server, reg, trained_registry, png


def _publish_relabelled(reg: Path, source_version: str, prefix: str) -> str:
    """Publish a copy of a version with renamed labels (same weights), like a new training."""
    labels = registry.load_artifact(reg, MODEL, source_version).class_labels
    return republish(reg, source_version, class_labels=[f"{prefix}{label}" for label in labels])


def test_1_not_ready_until_a_model_is_published(story):
    server, _, _, png = story
    assert server.client.get("/health/live").status_code == 200
    ready = server.client.get("/health/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"]
    assert MODEL in ready.json()["detail"]
    response = post_raw(server.client, png)
    assert response.status_code == 503 and response.json()["error"] == "model_not_ready"
    assert server.client.get("/models").json() == {"models": [], "waiting_for": [MODEL]}
    server.wait_versions(0)  # both workers up and reporting, serving nothing


def test_2_first_promotion_makes_every_worker_ready(story):
    server, reg, trained, png = story
    # Publish, then promote v1, as the trainer does (the pointer appears last).
    shutil.copytree(trained / MODEL, reg / MODEL, ignore=shutil.ignore_patterns("production"))
    shutil.copy(trained / MODEL / "production", reg / MODEL / "production")
    server.wait_versions(1)
    assert server.client.get("/health/ready").status_code == 200
    assert post_raw(server.client, png).json()["version"] == "1"


def test_3_hot_reload_swaps_versions_without_failing_requests(story):
    server, reg, _, png = story
    failures: list[str] = []
    answered: set[str] = set()
    stop = threading.Event()

    def hammer():
        with server.fresh() as client:
            while not stop.is_set():
                response = post_raw(client, png)
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    answered.add(response.json()["version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        server.wait_until(lambda: "1" in answered, "requests answered by version 1")
        version = _publish_relabelled(reg, "1", "v2-")
        production.promote(reg, MODEL, version)
        server.wait_versions(2)
        # keep the load on until the swap is seen from a client (workers poll independently)
        server.wait_until(lambda: "2" in answered, "requests answered by version 2")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert "2" in answered
    body = post_raw(server.client, png).json()
    assert body["version"] == "2" and body["predictions"][0]["label"].startswith("v2-")
    assert sum(server.metric(r'^imgclf_model_reloads_total\{.*outcome="loaded"')) >= 4


def test_4_admin_endpoints_require_the_bearer_token(story):
    server, *_ = story
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}):
        response = server.client.post("/admin/rollback", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert server.versions() == [2.0, 2.0]  # nothing happened


def test_5_admin_rollback_and_promote_move_every_worker(story):
    server, reg, _, png = story
    response = server.client.post("/admin/rollback", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["production"], body["loaded"], body["changed"]) == ("1", "1", True)
    assert registry.read_production(reg, MODEL) == "1"
    server.wait_versions(1)
    assert post_raw(server.client, png).json()["version"] == "1"

    response = server.client.post("/admin/promote", headers=AUTH, json={"version": "2"})
    assert response.status_code == 200, response.text
    server.wait_versions(2)
    reload = server.client.post("/admin/reload", headers=AUTH).json()
    assert (reload["production"], reload["loaded"], reload["changed"]) == ("2", "2", False)


def test_6_admin_promote_refuses_unknown_and_malformed_versions(story):
    server, *_ = story
    unknown = server.client.post("/admin/promote", headers=AUTH, json={"version": "99"})
    assert unknown.status_code == 404 and "published versions: 1, 2" in unknown.json()["detail"]
    malformed = server.client.post("/admin/promote", headers=AUTH, json={"version": "../1"})
    assert malformed.status_code == 400
    no_body = server.client.post("/admin/promote", headers=AUTH, json={})
    assert no_body.status_code == 400
    other_model = server.client.post("/admin/reload?model=other", headers=AUTH)
    assert other_model.status_code == 404


def test_7_tampered_version_is_refused_and_the_old_one_keeps_serving(story):
    server, reg, _, png = story
    version = _publish_relabelled(reg, "1", "v3-")
    weights = reg / MODEL / version / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the sha256 no longer matches
    weights.write_bytes(bytes(data))

    refused_before = sum(server.metric(r'^imgclf_model_reloads_total\{.*outcome="refused"'))
    production.promote(reg, MODEL, version)  # a pointer to a bad version, bypassing the API
    server.wait_until(
        lambda: sum(server.metric(r'^imgclf_model_reloads_total\{.*outcome="refused"'))
        >= refused_before + 2, "both workers to refuse the tampered version")
    assert server.versions() == [2.0, 2.0]
    assert post_raw(server.client, png).json()["version"] == "2"
    assert server.client.get("/health/ready").status_code == 200
    assert "sha256" in server.logs()

    explicit = server.client.post("/admin/reload", headers=AUTH)
    assert explicit.status_code == 422 and "sha256" in explicit.json()["detail"]
    refused = server.client.post("/admin/promote", headers=AUTH, json={"version": version})
    assert refused.status_code == 422 and refused.json()["error"] == "artifact_rejected"

    # Repair the pointer through the API: validated, written, followed by both workers.
    fixed = server.client.post("/admin/promote", headers=AUTH, json={"version": "2"})
    assert fixed.status_code == 200 and registry.read_production(reg, MODEL) == "2"
    log = (reg / MODEL / "promotions.log").read_text().splitlines()
    assert json.loads(log[-1])["version"] == "2"
    assert server.versions() == [2.0, 2.0]
