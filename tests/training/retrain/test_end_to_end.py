"""End to end: the real gunicorn service picks up promotions made by ``schedule --once``.

Two real processes, as in production: gunicorn (``service/gunicorn.conf.py``) serving a
registry, and ``python -m training schedule --once`` writing to it. No mocks in between.
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
NAME = "toy"
pytestmark = pytest.mark.timeout(240)


def _image(kind: int, rng: np.random.Generator, size: int = 16) -> Image.Image:
    """Horizontal stripes, vertical stripes or a checkerboard, with noise."""
    y, x = np.mgrid[0:size, 0:size]
    base = [(y // 2) % 2, (x // 2) % 2, ((x // 2) + (y // 2)) % 2][kind]
    pixels = np.clip(base * 0.8 + 0.1 + rng.normal(0, 0.15, (size, size)), 0, 1)
    return Image.fromarray((pixels * 255).astype(np.uint8), mode="L")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    for split, count in (("train", 24), ("test", 10)):
        for kind, label in enumerate(("hstripes", "vstripes", "checks")):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                _image(kind, rng).save(root / split / label / f"{i}.png")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    drop = ("SCHEDULE_", "TRAIN_", "MODEL_", "ADMIN_TOKEN", "BIND", "PORT", "WEB_CONCURRENCY")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _predict(base: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/predict?top_k=2", data=body, method="POST",
                                     headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _wait_for(condition, what: str, timeout: float = 60.0, server=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.returncode} while waiting for {what}")
        try:
            value = condition()
        except OSError:  # connection refused while gunicorn boots
            value = None
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _schedule_once(env: dict[str, str], **overrides: str) -> tuple[int, dict]:
    result = subprocess.run([sys.executable, "-m", "training", "schedule", "--once"],
                            env={**env, **overrides}, cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    reports = sorted((Path(env["MODEL_REGISTRY"]) / NAME / "reports").glob("*.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "retrain toy: promoted" in result.stderr  # the one summary log line
    return result.returncode, json.loads(reports[-1].read_text())


@pytest.fixture
def service(tmp_path):
    """gunicorn on a free 127.0.0.1 port over an empty registry; always terminated."""
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir()
    port = _free_port()
    env = {**_clean_env(), "MODEL_REGISTRY": str(registry_dir), "MODEL_NAME": NAME,
           "DEVICE": "cpu", "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
           "RELOAD_INTERVAL_S": "0.2", "TORCH_THREADS": "1", "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn.conf.py",
             "service.app:create_app()"],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield server, f"http://127.0.0.1:{port}", registry_dir
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        print(log_path.read_text(errors="replace")[-4000:])  # shown by pytest on failure


def test_service_hot_reloads_promotions_made_by_the_schedule_job(service, imagefolder, tmp_path):
    server, base, registry_dir = service
    job_env = {
        **_clean_env(), "PYTHONPATH": str(REPO),
        "MODEL_REGISTRY": str(registry_dir), "MODEL_NAME": NAME,
        "SCHEDULE_RUNS_DIR": str(tmp_path / "runs"),
        "TRAIN_DATASET": "imagefolder", "TRAIN_DATA_DIR": str(imagefolder),
        "TRAIN_CHANNELS": "1", "TRAIN_IMAGE_SIZE": "16", "TRAIN_AUGMENT": "none",
        "TRAIN_MODEL": "mlp", "TRAIN_MODEL_KWARGS": '{"hidden": [32]}',
        "TRAIN_OPTIMIZER": "adam", "TRAIN_LR": "0.01", "TRAIN_SCHEDULER": "none",
        "TRAIN_EPOCHS": "3", "TRAIN_BATCH_SIZE": "16",
        "TRAIN_DEVICE": "cpu", "TRAIN_PRECISION": "fp32", "TRAIN_THREADS": "1",
    }
    # Up but not ready: no production model yet.
    status, body = _wait_for(lambda: _get(f"{base}/health/ready"), "gunicorn to answer",
                             server=server)
    assert status == 503, body

    # 1. The first scheduled run promotes version 1; the service loads it by itself.
    _, report = _schedule_once(job_env)
    assert report["status"] == "promoted" and report["production"]["version_after"] == "1"
    _wait_for(lambda: _get(f"{base}/health/ready")[1].get("models") == {NAME: "1"},
              "ready with version 1", server=server)
    time.sleep(0.5)  # the other worker polls the pointer every 0.2 s
    checks = _png(_image(2, np.random.default_rng(7)))
    status, answer = _predict(base, checks)
    assert status == 200, answer
    assert answer["model"] == NAME and answer["version"] == "1"
    assert answer["predictions"][0]["label"] == "checks"

    # 2. Keep requests flowing while a second run is promoted: none may fail during the swap.
    failures, versions, stop = [], set(), threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            code, reply = _predict(base, checks)
            if code != 200:
                failures.append((code, reply))
            else:
                versions.add(reply["version"])

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        _, report = _schedule_once(job_env, SCHEDULE_WARM_START="true",
                                   SCHEDULE_PROMOTION_MARGIN="-1")
        assert report["production"]["version_after"] == "2"
        assert report["candidate"]["warm_start_from"].endswith(f"{NAME}/1/weights.pt")
        _wait_for(lambda: _predict(base, checks)[1].get("version") == "2",
                  "the service to answer with version 2", server=server)
        time.sleep(0.5)  # both workers have polled by now
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures[:3]
    assert versions == {"1", "2"}
    assert _get(f"{base}/health/ready")[1]["models"] == {NAME: "2"}
