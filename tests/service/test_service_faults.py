"""Faults against the real gunicorn server (2 workers): a worker killed under load, broken
artifacts promoted behind the service's back, a pointer to a missing version, an unreadable
registry, many large uploads at once and clients that hang up mid-body."""

import io
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from support.images import band_images, encode
from support.server import read_answer
from support.service import MODEL, assert_clean_error, post_raw, republish

from artifacts import production, registry
from artifacts.storage import atomic_write_bytes, sha256_file

PNG = encode(band_images(1, seed=5)[0][0])


@pytest.fixture(scope="module")
def served(start_server, trained_registry, tmp_path_factory):
    """A server on a private registry copy: v1 promoted, polled every 0.2 s."""
    reg = Path(shutil.copytree(trained_registry, tmp_path_factory.mktemp("faults") / "registry"))
    server = start_server(reg, RELOAD_INTERVAL_S="0.2", ACCESS_LOG="0")
    server.wait_live()
    server.wait_versions(1)
    server.wait_workers(2)
    return server, reg


def _metric_sum(server, pattern: str) -> float:
    return sum(server.metric(pattern))


def _publish_copy(reg: Path, mutate=None, metadata_change=None) -> str:
    """Publish v1's weights again as a new version, optionally broken afterwards."""
    version = republish(reg)
    directory = reg / MODEL / version
    if mutate is not None:
        mutate(directory / "weights.pt")
    if metadata_change is not None:
        meta_path = directory / "metadata.json"
        meta = json.loads(meta_path.read_text())
        metadata_change(meta, directory / "weights.pt")
        atomic_write_bytes(meta_path, json.dumps(meta).encode())
    return version


def _rehash(meta: dict, weights: Path) -> None:
    """The attacker (or a broken copy) also fixed the hash: only deeper checks can refuse it."""
    meta["weights_sha256"] = sha256_file(weights)


def _truncate(weights: Path) -> None:
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _flip_byte(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0x01
    weights.write_bytes(bytes(data))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/imgclf-pwned",))


def _pickled_object(weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    state["evil"] = _Evil()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    weights.write_bytes(buffer.getvalue())


def _wrong_class_count(meta: dict, weights: Path) -> None:
    meta["class_labels"] = meta["class_labels"] + ["an eleventh class"]


BROKEN = {
    "truncated": (_truncate, None, "sha256"),
    "truncated_rehashed": (_truncate, _rehash, "weights-only"),
    "wrong_sha256": (_flip_byte, None, "sha256"),
    "pickled_object": (_pickled_object, _rehash, "weights-only"),
    "wrong_class_count": (None, _wrong_class_count, "does not fit"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_promoted_artifact_is_refused_and_the_old_model_keeps_serving(served, case):
    server, reg = served
    mutate, change, reason = BROKEN[case]
    before = registry.read_production(reg, MODEL)
    refused = _metric_sum(server, r'^imgclf_model_reloads_total\{.*outcome="refused"')
    start = server.log_path.stat().st_size
    version = _publish_copy(reg, mutate, change)
    production.promote(reg, MODEL, version)  # behind the service's back, as a bad copy would
    try:
        server.wait_until(
            lambda: _metric_sum(server, r'^imgclf_model_reloads_total\{.*outcome="refused"')
            >= refused + 2, "both workers to refuse the broken version", timeout=60)
        assert server.versions() == [float(before)] * 2
        with server.fresh() as client:
            for _ in range(4):
                response = post_raw(client, PNG)
                assert response.status_code == 200 and response.json()["version"] == before
        ready = server.client.get("/health/ready")
        assert ready.status_code == 200  # still serving: truthful
        assert f"version {version} was refused" in ready.json()["detail"]
        assert "/" + reg.name not in ready.text  # no server paths
        with open(server.log_path, "rb") as handle:
            handle.seek(start)
            logs = handle.read().decode(errors="replace")
        assert f"refused {MODEL} v{version}" in logs and reason in logs, logs[-3000:]
        assert not Path("/tmp/imgclf-pwned").exists()
    finally:
        production.promote(reg, MODEL, before)
        server.wait_until(lambda: "detail" in server.client.get("/health/ready").json()
                          and server.client.get("/health/ready").json()["detail"] is None,
                          "readiness to clear", timeout=30)


def test_pointer_to_a_missing_version_is_reported_and_retried(served):
    server, reg = served
    before = registry.read_production(reg, MODEL)
    pointer = reg / MODEL / "production"
    atomic_write_bytes(pointer, b"77\n")
    try:
        server.wait_until(lambda: "version 77" in (server.client.get("/health/ready")
                                                   .json()["detail"] or ""),
                          "readiness to name the missing version", timeout=30)
        ready = server.client.get("/health/ready")
        assert ready.status_code == 200  # the loaded version keeps serving
        assert post_raw(server.client, PNG).json()["version"] == before
        # The version appears (a slow copy finished): picked up without a restart.
        shutil.copytree(reg / MODEL / before, reg / MODEL / "77.tmp")
        meta_path = reg / MODEL / "77.tmp" / "metadata.json"
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "version": "77"}))
        os.rename(reg / MODEL / "77.tmp", reg / MODEL / "77")
        server.wait_versions(77, timeout=30)
    finally:
        production.promote(reg, MODEL, before)
        server.wait_versions(int(before), timeout=30)


def test_unreadable_registry_keeps_serving_and_says_why_without_a_crash_loop(served):
    server, reg = served
    pids = server.worker_pids()
    pointer = reg / MODEL / "production"
    saved = pointer.read_bytes()
    start = server.log_path.stat().st_size
    pointer.unlink()
    pointer.mkdir()  # reading it now fails with an OSError (IsADirectoryError), even as root
    try:
        server.wait_until(lambda: "cannot read the production pointer" in (
            server.client.get("/health/ready").json()["detail"] or ""), "readiness", timeout=30)
        time.sleep(1.5)  # several polls
        assert server.worker_pids() == pids  # no crash, no restart
        assert post_raw(server.client, PNG).status_code == 200
        ready = server.client.get("/health/ready")
        assert "/" + reg.name not in ready.text
        with open(server.log_path, "rb") as handle:
            handle.seek(start)
            logs = handle.read().decode(errors="replace")
        assert "Traceback" not in logs
        # Logged once per worker, not once per poll.
        assert logs.count("cannot read the production pointer") <= 2, logs
        assert _metric_sum(server, r'^imgclf_model_reloads_total\{.*outcome="failed"') > 0
    finally:
        pointer.rmdir()
        atomic_write_bytes(pointer, saved)
    server.wait_until(lambda: server.client.get("/health/ready").json()["detail"] is None,
                      "readiness to clear", timeout=30)


def test_a_fresh_server_on_an_unreadable_registry_is_not_ready_and_stays_up(start_server,
                                                                           tmp_path):
    reg = tmp_path / "registry"
    (reg / MODEL / "production").mkdir(parents=True)  # a pointer that cannot be read
    server = start_server(reg, RELOAD_INTERVAL_S="0.2")
    server.wait_live()
    pids = server.wait_workers(2)
    ready = server.client.get("/health/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"]
    assert "cannot read the production pointer" in ready.json()["detail"]
    assert str(tmp_path) not in ready.text
    body = assert_clean_error(post_raw(server.client, PNG), 503)
    assert body["error"] == "model_not_ready"
    time.sleep(1.0)
    assert server.worker_pids() == pids and server.process.poll() is None
    server.stop()


def test_kill_9_of_a_worker_under_load_fails_only_its_in_flight_requests(served):
    server, reg = served
    production = registry.read_production(reg, MODEL)
    victim, survivor = server.worker_pids()
    statuses: list[int | str] = []
    stop = threading.Event()

    def hammer():
        with server.fresh() as client:  # a new connection per request: both workers get work
            while not stop.is_set():
                try:
                    response = post_raw(client, PNG)
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        assert response.json()["version"] == production
                except httpx.TransportError:
                    statuses.append("dropped")

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        before_kill = len(statuses)
        os.kill(victim, signal.SIGKILL)
        server.wait_until(lambda: len(server.worker_pids()) == 2
                          and victim not in server.worker_pids(), "a replacement worker")
        replacement = next(pid for pid in server.worker_pids() if pid != survivor)
        # The new worker loaded the current production version before taking requests.
        server.wait_until(lambda: sorted(server.versions()) == [float(production)] * 2,
                          "the replacement to serve production", timeout=60)
        time.sleep(1.5)  # traffic over both workers again
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert before_kill > 0
    failed = [s for s in statuses if s != 200]
    # Only what was in flight on the killed worker fails: at most one request per client.
    assert len(failed) <= len(threads), failed
    assert all(s == "dropped" for s in failed), failed  # never a 5xx, never a 503
    assert server.worker_pids() == sorted([survivor, replacement])
    with server.fresh() as client:
        assert all(client.get("/health/ready").status_code == 200 for _ in range(6))


def test_many_large_uploads_at_once_are_bounded_by_the_in_flight_budget(start_server,
                                                                       trained_registry):
    """Five 600 kB uploads trickling in at once, with room for two: the rest get 503."""
    server = start_server(trained_registry, WEB_CONCURRENCY="1", MAX_BODY_BYTES="1000000",
                          MAX_INFLIGHT_BYTES="1200000")
    server.wait_live()
    server.wait_versions(1, workers=1)
    body_size = 600_000
    sockets = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % body_size + b"\0" * 400_000)
        sockets.append(sock)
        time.sleep(0.2)
    answers = []
    for sock in sockets:
        try:
            sock.sendall(b"\0" * (body_size - 400_000))
        except OSError:
            pass
        sock.settimeout(15)
        answer = read_answer(sock)
        answers.append(answer.split(b" ", 2)[1] if answer else b"closed")
        sock.close()
    assert answers.count(b"503") >= 1, answers  # refused, not buffered
    assert set(answers) <= {b"503", b"422"}, answers  # the admitted ones decode zeros: 422
    assert post_raw(server.client, PNG).status_code == 200  # the budget was given back


def test_a_client_hanging_up_mid_body_is_not_a_server_error(served):
    server, _ = served
    errors_before = _metric_sum(server, r'^imgclf_http_requests_total\{.*status="500"')
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 100000\r\n\r\n" + PNG[:50])
            time.sleep(0.2)
    time.sleep(0.5)
    assert _metric_sum(server, r'^imgclf_http_requests_total\{.*status="500"') == errors_before
    assert post_raw(server.client, PNG).status_code == 200
