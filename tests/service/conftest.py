"""Fixtures of the service tests: a tiny artifact trained by the training code, and the real
gunicorn server on a free loopback port, always stopped after its module."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import band_images
from support.server import Server
from support.service import MAX_BODY, MAX_IMAGES, MODEL


@pytest.fixture
def registry_copy(trained_registry: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the trained registry."""
    return Path(shutil.copytree(trained_registry, tmp_path / "registry"))


@pytest.fixture(scope="module")
def start_server(tmp_path_factory) -> Iterator:
    """Factory ``start_server(registry, **env) -> Server``; every server is stopped after the
    module, whatever happened."""
    servers: list[Server] = []

    def start(registry: Path, **env: str) -> Server:
        log_path = tmp_path_factory.mktemp("gunicorn") / "server.log"
        server = Server(registry, log_path, model=MODEL, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# ----------------------------------------------------------------------------- hostile input

@pytest.fixture(scope="module")
def server(start_server, trained_registry):
    """The real gunicorn server (2 workers) of the test_hostile_* modules, with small limits
    (``MAX_BODY``, ``MAX_IMAGES``); other modules define a ``server`` of their own."""
    server = start_server(trained_registry, MAX_BODY_BYTES=str(MAX_BODY),
                          MAX_IMAGES=str(MAX_IMAGES), MAX_PIXELS=str(4096 * 4096))
    server.wait_live()
    server.wait_versions(1)
    server.pids = server.wait_workers(2)
    return server


@pytest.fixture
def workers_survive(server):
    """Hostile input answers a 4xx JSON error, never a 5xx, and no worker dies: after the test
    the worker pids are the ones the module started with, the server is still ready and the
    log has no traceback or 500. Use it with ``pytest.mark.usefixtures``."""
    start = server.log_path.stat().st_size
    yield
    assert server.worker_pids() == server.pids, "a worker died:\n" + server.logs()
    assert server.client.get("/health/ready").status_code == 200
    with open(server.log_path, "rb") as handle:
        handle.seek(start)
        new_lines = handle.read().decode(errors="replace")
    assert "Traceback" not in new_lines and " 500 " not in new_lines, new_lines[-3000:]


@pytest.fixture(scope="module")
def images():
    return band_images(10, seed=11)[0]  # uint8 (10, 28, 28), one per class
