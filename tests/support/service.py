"""Helpers of the service tests: images, reference predictions, and the real gunicorn server
(``gunicorn -c service/gunicorn.conf.py 'service.app:create_app()'``) as a subprocess."""

import gzip
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from artifacts.preprocess import EvalTransform
from artifacts.registry import load_artifact, publish
from service.workers.worker_table import WorkerTable

REPO = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
MODEL = "fmnist"
TOKEN = "test-admin-token"


# ----------------------------------------------------------------------------- images

def band_images(count: int, *, seed: int, size: int = 28, classes: int = 10) -> np.ndarray:
    """uint8 (N, H, W): the class is the row of a bright band (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 60, size=(count, size, size)).astype(np.int64)
    band = max(1, size // classes)
    for i, label in enumerate(labels):
        images[i, label * band:(label + 1) * band, :] += 150
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def encode(array_or_image, fmt: str = "PNG", **save) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(
        array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def reference_probabilities(registry: Path, name: str, images: np.ndarray,
                            version: str | None = None) -> np.ndarray:
    """What training evaluation computes for uint8 (N, H, W) images: softmax (N, classes)."""
    artifact = load_artifact(registry, name, version)
    batch = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
    with torch.inference_mode():
        logits = artifact.model(EvalTransform(spec=artifact.input_spec)(batch))
    return logits.softmax(dim=1).numpy()


# ----------------------------------------------------------------------------- the server

def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``gunicorn -c service/gunicorn.conf.py 'service.app:create_app()'`` as a subprocess."""

    def __init__(self, registry: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = {
            **os.environ,
            "MODEL_REGISTRY": str(registry), "MODEL_NAME": MODEL, "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2", "TORCH_THREADS": "1", "RELOAD_INTERVAL_S": "0.3",
            "DEVICE": "cpu", "LOG_LEVEL": "info", "GRACEFUL_TIMEOUT": "5",
            # fp32: tests compare scores with fp32 references to 1e-5 (bf16 has its own test)
            "PRECISION": "fp32",
        }
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        environment.update(env)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(GUNICORN), "-c", "service/gunicorn.conf.py", "service.app:create_app()"],
            cwd=REPO, env=environment, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_until(self, predicate, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.logs()}")
            try:
                if predicate():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}:\n{self.logs()}")

    def wait_live(self) -> None:
        self.wait_until(lambda: self.client.get("/health/live").status_code == 200, "live")

    def versions(self) -> list[float]:
        """The version each live worker serves, from the multiprocess gauge (one per pid)."""
        return self.metric(rf'^imgclf_model_version\{{.*model="{MODEL}"')

    def wait_versions(self, version: int, workers: int = 2, timeout: float = 60.0) -> None:
        """Until every one of the ``workers`` workers serves ``version``."""
        self.wait_until(lambda: self.versions() == [float(version)] * workers,
                        f"{workers} workers on v{version}", timeout)

    def fresh(self) -> httpx.Client:
        """A client without keep-alive, so requests spread over the workers."""
        return httpx.Client(base_url=self.url, timeout=30.0, headers={"Connection": "close"})

    def metric(self, pattern: str) -> list[float]:
        """Values of the /metrics lines whose text before the value matches ``pattern``."""
        text = self.client.get("/metrics").text
        regex = re.compile(pattern)
        return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if not line.startswith("#") and regex.search(line.rsplit(" ", 1)[0])]

    def worker_pids(self) -> list[int]:
        """The pids of the gunicorn workers (children of the master), sorted."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return sorted(int(pid) for pid in path.read_text().split())

    def wait_workers(self, count: int = 2, timeout: float = 60.0) -> list[int]:
        """Until ``count`` workers run; returns their pids."""
        self.wait_until(lambda: len(self.worker_pids()) == count, f"{count} workers", timeout)
        return self.worker_pids()

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


# ----------------------------------------------------------------------------- hostile input

def read_answer(sock: socket.socket, received: bytes = b"") -> bytes:
    """Read one HTTP/1.1 answer from a raw socket, after ``received``: its head and its
    Content-Length bytes of body (they may come in separate segments), or what came before the
    peer closed or went quiet."""
    answer = received
    try:
        while not _complete(answer):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except OSError:  # reset, or the socket's timeout
        pass
    return answer


def _complete(answer: bytes) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


# Limits of the test_hostile_* server (conftest ``server``): small, so that "over the limit"
# is cheap to send.
MAX_BODY = 1024 * 1024
MAX_IMAGES = 16


def short_ids(values) -> list[str]:
    """Short test ids for long byte-string parameters."""
    return [f"{i}:{v[:16]!r}" for i, v in enumerate(values)]


def post_raw(server, data: bytes, content_type: str = "image/png", query: str = ""):
    return server.client.post(f"/predict{query}", content=data,
                              headers={"Content-Type": content_type})


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
