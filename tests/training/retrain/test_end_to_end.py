"""End to end: the real gunicorn service picks up promotions made by ``schedule --once``.

Two real processes, as in production: gunicorn (``service/gunicorn.conf.py``) serving a
registry, and ``python -m training schedule --once`` writing to it. No mocks in between.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import REPO
from support.images import encode, stripe_image
from support.retrain import NAME, job_environment
from support.server import Server
from support.service import post_raw

pytestmark = pytest.mark.timeout(240)


def _clean_env() -> dict[str, str]:
    drop = ("SCHEDULE_", "TRAIN_", "MODEL_", "ADMIN_TOKEN", "BIND", "PORT", "WEB_CONCURRENCY")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _schedule_once(env: dict[str, str], **overrides: str) -> dict:
    """Run the job once in a process of its own; its report."""
    result = subprocess.run([sys.executable, "-m", "training", "schedule", "--once"],
                            env={**env, **overrides}, cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "retrain toy: promoted" in result.stderr  # the one summary log line
    reports = sorted((Path(env["MODEL_REGISTRY"]) / NAME / "reports").glob("*.json"))
    return json.loads(reports[-1].read_text())


@pytest.fixture
def service(tmp_path):
    """gunicorn on a free 127.0.0.1 port over an empty registry (the job's model, its default
    precision); always stopped, its log shown when the test fails."""
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir()
    server = Server(registry_dir, tmp_path / "gunicorn.log", model=NAME, RELOAD_INTERVAL_S="0.2",
                    PRECISION="auto")
    try:
        yield server, registry_dir
    finally:
        server.stop()
        print(server.log_path.read_text(errors="replace")[-4000:])  # shown by pytest on failure


def test_service_hot_reloads_promotions_made_by_the_schedule_job(service, imagefolder, tmp_path):
    server, registry_dir = service
    job_env = {**_clean_env(), "PYTHONPATH": str(REPO),
               **job_environment(registry_dir, tmp_path / "runs", imagefolder)}
    # Up but not ready: no production model yet.
    server.wait_live()
    assert server.client.get("/health/ready").status_code == 503

    # 1. The first scheduled run promotes version 1; the service loads it by itself.
    report = _schedule_once(job_env)
    assert report["status"] == "promoted" and report["production"]["version_after"] == "1"
    server.wait_versions(1)
    assert server.client.get("/health/ready").json()["models"] == {NAME: "1"}
    checks = encode(stripe_image(2, np.random.default_rng(7)))
    response = post_raw(server.client, checks, query="?top_k=2")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == NAME and answer["version"] == "1"
    assert answer["predictions"][0]["label"] == "checks"

    # 2. Keep requests flowing while a second run is promoted: none may fail during the swap.
    failures, versions, stop = [], set(), threading.Event()

    def hammer() -> None:
        with server.fresh() as client:
            while not stop.is_set():
                response = post_raw(client, checks)
                if response.status_code != 200:
                    failures.append((response.status_code, response.text))
                else:
                    versions.add(response.json()["version"])

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        # The data did not change: the job environment forces the run (test_runs has the skip).
        report = _schedule_once(job_env, SCHEDULE_WARM_START="true",
                                SCHEDULE_PROMOTION_MARGIN="-1", SCHEDULE_MAX_CLASS_DROP="1")
        assert report["production"]["version_after"] == "2"
        assert report["candidate"]["warm_start_from"].endswith(f"{NAME}/1/weights.pt")
        server.wait_versions(2)  # both workers
        time.sleep(0.5)  # the hammer sees the new version too
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures[:3]
    assert versions == {"1", "2"}
    assert server.client.get("/health/ready").json()["models"] == {NAME: "2"}
