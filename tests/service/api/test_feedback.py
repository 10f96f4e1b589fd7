"""POST /feedback against the real gunicorn server (2 workers): the three formats, the label's
three sources, dedup (201 then 200), the store on disk, auth, limits, bad images, metrics,
and the faults of the store (read-only: 503, full: 507) with /predict and readiness untouched.

The faults are real: as root, a read-only bind mount over the store and a tiny tmpfs (root
ignores file modes); as another user, a read-only store by chmod, and no full disk (skipped).
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar.testing import TestClient
from support.bombs import png_bomb
from support.images import band_images, encode
from support.service import MODEL, TOKEN, assert_clean_error, inprocess_settings

from artifacts.feedback import iter_samples
from service.app import create_app
from service.schemas import FeedbackResponse

FEEDBACK_TOKEN = "test-feedback-token"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
MAX_IMAGES, MAX_PIXELS, MAX_BODY = 4, 200 * 200, 100_000


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback") / "store"  # made by the first write


@pytest.fixture(scope="module")
def server(start_server, trained_registry, store):
    server = start_server(
        trained_registry, FEEDBACK_TOKEN=FEEDBACK_TOKEN, FEEDBACK_DIR=str(store), ADMIN_TOKEN=TOKEN,
        MAX_IMAGES=str(MAX_IMAGES), MAX_PIXELS=str(MAX_PIXELS), MAX_BODY_BYTES=str(MAX_BODY),
    )
    server.wait_live()
    server.wait_versions(1)
    server.labels = server.client.get("/models").json()["models"][0]["class_labels"]
    return server


_seed = iter(range(1000, 10_000))


def fresh_png() -> bytes:
    """A PNG no test sent before (each call draws new noise)."""
    return encode(band_images(1, seed=next(_seed))[0][0])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def post_raw(server, data: bytes, label: str | None, *, headers=FEEDBACK, query: str = "",
             content_type: str = "image/png"):
    query = (f"label={quote(label, safe='')}&" if label is not None else "") + query
    return server.client.post(f"/feedback?{query}", content=data,
                              headers={**headers, "Content-Type": content_type})


def log_entries(store: Path) -> list[dict]:
    return [json.loads(line) for line in (store / "feedback.jsonl").read_text().splitlines()]


def feedback_count(server, label: str, outcome: str) -> float:
    values = server.metric(rf'^imgclf_feedback_total\{{label="{re.escape(label)}",outcome="{outcome}"\}}')
    return sum(values)


# ----------------------------------------------------------------------------- storing

def test_a_new_image_is_201_then_200_and_stored_under_its_encoded_label(server, store):
    image = fresh_png()
    first = post_raw(server, image, "T-shirt/top")
    assert first.status_code == 201, first.text
    body = FeedbackResponse.model_validate_json(first.content).model_dump()
    assert body == {"model": MODEL, "version": "1",
                    "images": [{"id": sha(image), "label": "T-shirt/top", "stored": True}]}
    path = store / "T-shirt%2Ftop" / f"{sha(image)}.png"
    assert path.read_bytes() == image  # the original bytes
    again = post_raw(server, image, "T-shirt/top")
    assert again.status_code == 200, again.text
    assert again.json()["images"] == [{"id": sha(image), "label": "T-shirt/top", "stored": False}]
    assert [s.label for s in iter_samples(store) if s.sha256 == sha(image)] == ["T-shirt/top"]
    assert [e["stored"] for e in log_entries(store) if e["id"] == sha(image)] == [True, False]


def test_multipart_with_a_label_field_stores_every_file(server, store):
    images = [fresh_png(), encode(band_images(1, seed=next(_seed))[0][0], "JPEG")]
    files = [("file", ("a.png", images[0], "image/png")), ("file", ("b.png", images[1], "image/png"))]
    response = server.client.post("/feedback", files=files, data={"label": "Sneaker"}, headers=FEEDBACK)
    assert response.status_code == 201, response.text
    assert [i["id"] for i in response.json()["images"]] == [sha(d) for d in images]
    # the extension is the decoded format's, whatever the file name said
    assert (store / "Sneaker" / f"{sha(images[1])}.jpg").read_bytes() == images[1]


def test_json_with_a_label_key_and_the_prediction_it_corrects(server, store):
    image = fresh_png()
    predicted = server.client.post("/predict", content=image, headers={"Content-Type": "image/png"})
    request_id = predicted.headers["x-request-id"]
    payload = {"images": [base64.b64encode(image).decode()], "label": "Bag", "request_id": request_id}
    response = server.client.post("/feedback", json=payload, headers=FEEDBACK)
    assert response.status_code == 201, response.text
    (entry,) = [e for e in log_entries(store) if e["id"] == sha(image)]
    assert entry["request_id"] == request_id and entry["label"] == "Bag"
    assert (entry["model"], entry["version"]) == (MODEL, "1") and entry["received_at"]
    assert entry["request_id"] != response.headers["x-request-id"]


def test_the_label_must_come_from_exactly_one_place(server):
    image = fresh_png()
    both = server.client.post("/feedback?label=Bag", files=[("file", ("a.png", image, "image/png"))],
                              data={"label": "Bag"}, headers=FEEDBACK)
    assert "once" in assert_clean_error(both, 400)["detail"]
    none = post_raw(server, image, None)
    assert "no label" in assert_clean_error(none, 400)["detail"]


def test_an_unknown_label_is_422_listing_the_valid_ones(server, store):
    before = feedback_count(server, "(unknown)", "invalid_label")
    response = post_raw(server, fresh_png(), "Shoe")
    body = assert_clean_error(response, 422)
    assert body["error"] == "unknown_label" and body["valid_labels"] == server.labels
    assert "T-shirt/top" in body["detail"]
    assert not (store / "Shoe").exists()
    assert feedback_count(server, "(unknown)", "invalid_label") == before + 1


def test_a_corrupt_image_among_good_ones_is_422_and_nothing_is_stored(server, store):
    good, bad = fresh_png(), fresh_png()
    files = [("file", ("good.png", good, "image/png")), ("file", ("bad.png", bad[:60], "image/png"))]
    response = server.client.post("/feedback", files=files, data={"label": "Coat"}, headers=FEEDBACK)
    body = assert_clean_error(response, 422)
    assert body["error"] == "invalid_image" and "nothing was stored" in body["detail"]
    assert [(p["index"], p["filename"]) for p in body["problems"]] == [(1, "bad.png")]
    assert not any(s.sha256 in (sha(good), sha(bad)) for s in iter_samples(store))


def test_outcomes_are_counted_per_image_by_label(server):
    counts = {o: feedback_count(server, "Dress", o) for o in ("stored", "duplicate", "invalid_image")}
    image = fresh_png()
    files = [("file", ("a.png", image, "image/png")), ("file", ("b.png", fresh_png(), "image/png"))]
    assert server.client.post("/feedback?label=Dress", files=files, headers=FEEDBACK).status_code == 201
    assert post_raw(server, image, "Dress").status_code == 200
    assert post_raw(server, b"not an image", "Dress").status_code == 422
    assert feedback_count(server, "Dress", "stored") == counts["stored"] + 2
    assert feedback_count(server, "Dress", "duplicate") == counts["duplicate"] + 1
    assert feedback_count(server, "Dress", "invalid_image") == counts["invalid_image"] + 1


def test_the_same_image_under_another_label_is_409(server):
    image = fresh_png()
    assert post_raw(server, image, "Trouser").status_code == 201
    body = assert_clean_error(post_raw(server, image, "Pullover"), 409)
    assert body["error"] == "label_conflict" and body["stored_label"] == "Trouser"


# ----------------------------------------------------------------------------- auth and limits

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Bearer {TOKEN}"},  # the admin token
                                     {"Authorization": f"Basic {FEEDBACK_TOKEN}"}])
def test_a_missing_or_wrong_token_is_401(server, headers):
    response = post_raw(server, fresh_png(), "Bag", headers=headers)
    assert assert_clean_error(response, 401)["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_feedback_is_403_without_a_token_configured(registry_copy):
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        response = client.post("/feedback?label=Bag", content=b"x", headers=FEEDBACK)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("feedback is disabled: set FEEDBACK_TOKEN")


@pytest.mark.parametrize("case", ["body", "count", "pixels"])
def test_limits_are_the_ones_of_predict(server, store, case):
    if case == "body":
        response = post_raw(server, os.urandom(MAX_BODY + 1), "Bag")
    elif case == "count":
        files = [("file", (f"{i}.png", fresh_png(), "image/png")) for i in range(MAX_IMAGES + 1)]
        response = server.client.post("/feedback?label=Bag", files=files, headers=FEEDBACK)
    else:
        response = post_raw(server, png_bomb(1000, 1000), "Bag")
    assert_clean_error(response, 413)


# ----------------------------------------------------------------------------- store faults

@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only for the server: a read-only bind mount of itself as root (root ignores
    modes), else modes 555/444 on the tree."""
    if os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(path), str(path)]).returncode == 0:
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
        return
    entries = [path, *path.rglob("*")]
    for entry in entries:
        entry.chmod(0o555 if entry.is_dir() else 0o444)
    try:
        yield
    finally:
        for entry in entries:
            entry.chmod(0o755 if entry.is_dir() else 0o644)


def test_an_unwritable_store_is_503_and_predict_and_readiness_stay_200(server, store):
    assert post_raw(server, fresh_png(), "Shirt").status_code == 201  # the store exists
    before = feedback_count(server, "Shirt", "unavailable")
    image = fresh_png()
    with read_only(store):
        response = post_raw(server, image, "Shirt")
        body = assert_clean_error(response, 503)
        assert body["error"] == "feedback_unavailable" and "FEEDBACK_DIR" in body["detail"]
        predicted = server.client.post("/predict", content=image, headers={"Content-Type": "image/png"})
        assert predicted.status_code == 200, predicted.text
        assert server.client.get("/health/ready").status_code == 200
    assert feedback_count(server, "Shirt", "unavailable") == before + 1
    assert post_raw(server, image, "Shirt").status_code == 201  # recovers by itself


def test_a_full_store_is_507_and_leaves_no_partial_file(server, store, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs a tiny tmpfs: root only (the store's unit tests "
                    "inject ENOSPC instead)")
    store.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(store)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        noise = encode(np.random.default_rng(0).integers(0, 256, (150, 150), dtype=np.uint8))
        assert len(noise) > 16 * 1024
        response = post_raw(server, noise, "Ankle boot")
        assert assert_clean_error(response, 507)["error"] == "insufficient_storage"
        assert [p.name for p in store.rglob("*") if p.is_file()] == []
        assert server.client.get("/health/ready").status_code == 200
        assert feedback_count(server, "Ankle boot", "disk_full") >= 1
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


# ----------------------------------------------------------------------------- the schema

@pytest.fixture(scope="module")
def feedback_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")


# Filtered here: schemathesis ignores an .include() made on the schema a fixture returns.
schema = schemathesis.pytest.from_fixture("feedback_schema").include(path="/feedback")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_generated_feedback_requests_never_get_a_server_error(case):
    response = case.call(headers=FEEDBACK, timeout=30)
    assert response.status_code < 500 or response.status_code == 503, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}")
    if response.status_code >= 400:
        body = response.json()
        assert body["error"] and body["detail"] and "Traceback" not in response.text


def test_no_request_above_left_a_traceback_or_a_dead_worker(server):
    """Runs last in this module: every refusal above was an answer, not a crash."""
    assert len(server.worker_pids()) == 2
    assert "Traceback" not in server.log_path.read_text(errors="replace"), server.logs()
