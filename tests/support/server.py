"""The real service, ``gunicorn -c service/gunicorn.conf.py 'service.app:create_app()'``, as a
subprocess on a free loopback port, and what raw-socket tests need to read its answers."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support import REPO

GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """gunicorn serving ``model`` from ``registry``, 2 workers, 1 torch thread, fp32 (tests
    compare scores with fp32 references to 1e-5), the pointer polled every 0.3 s; ``env``
    overrides any of it. Its prometheus files live next to ``log_path`` (never in a
    ``/tmp/imgclf-metrics-*`` directory of its own). Call :meth:`stop` at the end."""

    def __init__(self, registry: Path, log_path: Path, *, model: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.model = model
        metrics_dir = log_path.parent / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        environment = {
            **os.environ,
            "MODEL_REGISTRY": str(registry), "MODEL_NAME": model, "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2", "TORCH_THREADS": "1", "RELOAD_INTERVAL_S": "0.3",
            "DEVICE": "cpu", "LOG_LEVEL": "info", "GRACEFUL_TIMEOUT": "5", "PRECISION": "fp32",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        } | env
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
        return self.metric(rf'^imgclf_model_version\{{.*model="{self.model}"')

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
