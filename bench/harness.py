"""What the serving benchmarks share: their inputs (images, PNG and multipart bodies, untrained
published models), the real server (gunicorn, 2 uvicorn workers, as users run it), the
prelude of the ``wrk`` scripts that drive it, and the host's steal time, which tells a run
disturbed by other guests of this VM's host. ``bench/serve.py`` and ``bench/soak.py`` use it."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import models  # noqa: E402
from artifacts import production, registry  # noqa: E402
from artifacts.metadata import build_metadata  # noqa: E402
from artifacts.preprocess import InputSpec  # noqa: E402
from training.data.sources import DEBIAN_FASHION_MNIST, FASHION_MNIST_LABELS, read_idx  # noqa: E402

WORKERS = 2
PRECISION = "auto"  # the server's default; the in-process limit uses the same
# wrk script prelude: POST /predict with the bodies body_<i>.bin of a directory, round robin
# from a random start (arguments: directory, count, Content-Type). bench/soak.py shares it.
LUA_BODIES = r"""
local requests, idx = {}, 0
function init(args)
  local dir, count, ctype = args[1], tonumber(args[2]), args[3]
  for i = 0, count - 1 do
    local f = assert(io.open(dir .. "/body_" .. i .. ".bin", "rb"))
    local body = f:read("*a")
    f:close()
    requests[#requests + 1] = wrk.format("POST", "/predict", {["Content-Type"] = ctype}, body)
  end
  idx = math.random(0, #requests - 1)
end
function request()
  idx = idx % #requests + 1
  return requests[idx]
end
"""

def load_images(count: int) -> tuple[np.ndarray, str]:
    """uint8 (N, 28, 28): Fashion-MNIST test images when installed, else synthetic."""
    path = DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    if path.is_file():
        return read_idx(path)[:count].copy(), f"real Fashion-MNIST test images ({path})"
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (count, 28, 28), dtype=np.uint8), "synthetic random images"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def multipart(files: list[bytes], boundary: str) -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}")


def publish(reg: Path, name: str, arch: str, spec: InputSpec) -> None:
    torch.manual_seed(0)
    model = models.build_model(arch, num_classes=10, in_channels=spec.channels,
                               image_size=spec.size)
    metadata = build_metadata(
        name=name, architecture=arch, architecture_kwargs={}, class_labels=FASHION_MNIST_LABELS,
        input_spec=spec, metrics={}, dataset="untrained (benchmark)", config={})
    production.promote(reg, name, registry.publish(reg, metadata, model.state_dict()))


def write_bodies(directory: Path, bodies: list[bytes]) -> None:
    directory.mkdir(parents=True)
    for i, body in enumerate(bodies):
        (directory / f"body_{i}.bin").write_bytes(body)



def cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of this VM so far, from ``/proc/stat``; (0, 0) where there is
    none. Steal is time the hypervisor gave this VM's vCPUs to other guests: a run with a lot of
    it measured the neighbours as much as the server."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


T = TypeVar("T")
# Above this share of the VM's CPU time taken by other guests (steal), a run is measured again.
STEAL_LIMIT_PCT = 10.0
# Runs whose p50/p99 the goals judge (concurrency 1 and 8) tolerate less: steal comes in slices
# of milliseconds, and a p99 is one request in a hundred. Six MLP runs in a row at c=8 (one
# server, 6 s each) had p99/p50 of 1.9, 2.3, 2.7, 3.0, 5.9 and 11.8 at 0.2, 1.3, 2.3, 3.7, 5.7
# and 22% steal.
TAIL_STEAL_LIMIT_PCT = 3.0
STEAL_RETRIES = 2


def undisturbed(measure: Callable[[], T], steal_pct: Callable[[T], float], *,
                limit_pct: float = STEAL_LIMIT_PCT) -> T:
    """``measure()``, again (at most ``STEAL_RETRIES`` times) while the hypervisor gave more than
    ``limit_pct`` % of this VM's CPU to other guests during it; the last attempt counts
    whatever its steal (the table shows it). On this shared host a run with 28% steal served
    211 req/s where the next, with 2%, served 327 (ResNet-18, c=64)."""
    for _ in range(STEAL_RETRIES):
        outcome = measure()
        if steal_pct(outcome) <= limit_pct:
            return outcome
        print(f"  (steal {steal_pct(outcome):.0f}% during that run: measured again)", flush=True)
    return measure()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn with 2 uvicorn workers of 1 torch thread each, as the defaults give on 2 cores
    (a worker whose sibling is idle borrows its core: TORCH_THREADS_ALONE's default)."""

    def __init__(self, reg: Path, name: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "MODEL_REGISTRY": str(reg), "MODEL_NAME": name,
                       "BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(WORKERS),
                       "TORCH_THREADS": "1", "LOG_LEVEL": "warning", "PRECISION": PRECISION,
                       **env}
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = open(log, "wb")  # noqa: SIM115
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.process = subprocess.Popen(
            [str(gunicorn), "-c", "service/gunicorn.conf.py", "service.app:create_app()"],
            cwd=REPO, env=environment, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 180
        ready = 0
        while ready < 2 * WORKERS:  # several answers in a row: both workers loaded
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not become ready; see {log}")
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=5) as r:
                    ready = ready + 1 if r.status == 200 else 0
            except OSError:
                ready = 0
            time.sleep(0.2)

    def predict_load(self) -> tuple[float, float]:
        """``/predict`` requests answered so far, and images queued now (all workers)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        answered = queued = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "imgclf_http_requests_total" and \
                        sample.labels.get("route") == "/predict":
                    answered += sample.value
                elif sample.name == "imgclf_queue_depth_images":
                    queued += sample.value
        return answered, queued

    def settle(self, quiet_s: float, timeout_s: float = 60) -> None:
        """Wait until the requests a load client left in flight are answered: nothing queued and
        no ``/predict`` answer for ``quiet_s`` (longer than one forward). ``wrk`` stops at its
        deadline with up to one request per connection still queued; ResNet-18 with batching
        off takes ~0.5-1 s of both cores to clear 64 of them, which would otherwise be taken
        from whatever is measured next."""
        deadline = time.monotonic() + timeout_s
        last, since = self.predict_load()[0], time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            answered, queued = self.predict_load()
            if answered != last or queued:
                last, since = answered, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
        raise RuntimeError(f"the server at {self.url} was still busy after {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()




# ----------------------------------------------------------------------------- Open Inference Protocol v2

# wrk script prelude for v2 inference: POST <path> with the bodies body_<i>.bin of a directory and
# each one's Inference-Header-Content-Length from header_<i>.txt, round robin from a random start
# (arguments: directory, count, path).
LUA_V2_BODIES = r"""
local requests, idx = {}, 0
function init(args)
  local dir, count, path = args[1], tonumber(args[2]), args[3]
  for i = 0, count - 1 do
    local f = assert(io.open(dir .. "/body_" .. i .. ".bin", "rb"))
    local body = f:read("*a")
    f:close()
    local h = assert(io.open(dir .. "/header_" .. i .. ".txt", "rb"))
    local length = h:read("*a")
    h:close()
    requests[#requests + 1] = wrk.format("POST", path, {
      ["Content-Type"] = "application/octet-stream",
      ["Inference-Header-Content-Length"] = length}, body)
  end
  idx = math.random(0, #requests - 1)
end
function request()
  idx = idx % #requests + 1
  return requests[idx]
end
"""


def v2_body(files: list[bytes]) -> tuple[bytes, int]:
    """A v2 inference request of encoded images as a binary BYTES tensor (the binary tensor data
    extension), every output asked for in binary as tritonclient does by default; the body and
    the length of its JSON part."""
    data = b"".join(len(f).to_bytes(4, "little") + f for f in files)
    header = json.dumps({
        "inputs": [{"name": "images", "shape": [len(files)], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + data, len(header)


def write_v2_bodies(directory: Path, requests: list[list[bytes]]) -> None:
    """``body_<i>.bin`` and ``header_<i>.txt`` for :data:`LUA_V2_BODIES`, one per request."""
    directory.mkdir(parents=True)
    for i, files in enumerate(requests):
        body, header_length = v2_body(files)
        (directory / f"body_{i}.bin").write_bytes(body)
        (directory / f"header_{i}.txt").write_text(str(header_length))
