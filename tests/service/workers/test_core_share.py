"""Borrowing idle workers' cores (``service.workers.core_share``): the shared table across a real fork,
the choice of threads, and the real gunicorn server wiring it up."""

import math
import os
import socket
import threading
import time

import pytest
import torch
from support.images import encode
from support.server import read_answer
from support.service import table_of

from service.workers import core_share, worker_table
from service.workers.core_share import BUSY_HOLD_S, CoreShare, usable_cores
from service.workers.worker_table import WorkerTable


def share(table: WorkerTable, slot: int) -> CoreShare:
    return CoreShare(table, slot, shared_threads=1, alone_threads=2)


def test_a_forked_worker_busy_in_the_shared_table_keeps_the_others_on_their_share():
    table = table_of(2)
    mine = share(table, 0)
    assert mine.threads_now() == 2  # nobody else works: all cores
    pid = os.fork()
    if pid == 0:  # the sibling worker: busy from now on, as its event loop writes it
        table.set_busy_until(1, math.inf)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert mine.threads_now() == 1
    table.clear(1)  # the master after the sibling exited
    assert mine.threads_now() == 2


def test_a_worker_stays_busy_for_the_hold_after_its_last_request(monkeypatch):
    """Two workers whose clients keep both working must not both borrow between requests."""
    table = table_of(2)
    mine, sibling = share(table, 0), share(table, 1)
    monkeypatch.setattr(core_share, "BUSY_HOLD_S", 3600.0)
    with sibling.request(), sibling.request():  # two in flight: busy until the last one ends
        assert mine.threads_now() == 1
    assert mine.threads_now() == 1  # ended, but within the hold
    monkeypatch.setattr(core_share, "BUSY_HOLD_S", 0.0)
    with sibling.request():
        pass
    assert mine.threads_now() == 2  # the hold is over
    with mine.request():  # a worker's own requests never keep it from borrowing
        assert mine.threads_now() == 2


def test_a_worker_given_more_threads_than_cores_never_gets_fewer_alone(monkeypatch):
    monkeypatch.setattr(worker_table, "_table", WorkerTable(2))
    monkeypatch.setattr(worker_table, "_slot", 0)
    assert CoreShare.of_this_worker(shared_threads=64, alone_threads=None).alone_threads == 64
    assert CoreShare.of_this_worker(shared_threads=4, alone_threads=2).alone_threads == 4


def test_without_gunicorns_table_a_worker_never_borrows(monkeypatch):
    monkeypatch.setattr(worker_table, "_table", None)
    monkeypatch.setattr(worker_table, "_slot", None)
    alone = CoreShare.of_this_worker(shared_threads=1, alone_threads=2)
    with alone.request():
        assert alone.threads_now() == 1
    assert alone.alone_threads == 1


def test_the_thread_count_is_set_on_the_thread_that_runs_the_forward():
    """OpenMP keeps its thread count per calling thread (a thread takes the last value set
    anywhere only at its first parallel region): the inference thread sets its own."""
    table = table_of(2)
    mine = share(table, 0)
    seen = []

    def inference_thread() -> None:
        mine.set_threads_for_forward()
        seen.append(torch.get_num_threads())
        table.set_busy_until(1, math.inf)
        mine.set_threads_for_forward()
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    worker = threading.Thread(target=inference_thread)
    worker.start()
    worker.join()
    torch.set_num_threads(before)
    assert seen == [2, 1]


def _forwards(server) -> dict[str, float]:
    return {threads: sum(server.metric(rf'imgclf_forwards_total\{{model="[^"]+",threads="{threads}"\}}'))
            for threads in ("1", "2")}


@pytest.mark.parametrize("alone", ["2", "1"])
def test_gunicorn_workers_borrow_idle_cores_only_when_allowed(start_server, trained_registry,
                                                             images, alone):
    """The real server (2 workers, 1 thread each): one client at a time leaves a worker idle,
    so forwards run on 2 threads, unless TORCH_THREADS_ALONE keeps them to 1. The metric
    reports the count torch itself has on the inference thread."""
    server = start_server(trained_registry, TORCH_THREADS="1", TORCH_THREADS_ALONE=alone)
    server.wait_live()
    server.wait_versions(1)
    time.sleep(BUSY_HOLD_S * 2)  # the other worker's model load is over too
    before = _forwards(server)
    for image in images:
        response = server.client.post("/predict", content=encode(image),
                                      headers={"content-type": "image/png"})
        assert response.status_code == 200
    after = _forwards(server)
    borrowed, own = after["2"] - before["2"], after["1"] - before["1"]
    assert borrowed + own == len(images)
    if alone == "2":
        assert borrowed >= len(images) - 1, (borrowed, own)
    else:
        assert borrowed == 0


def test_gunicorn_workers_keep_to_their_share_while_a_sibling_works(start_server,
                                                                    trained_registry, images):
    """Requests held in flight (bodies still arriving) make their workers busy; a forward on
    the other worker then runs on its own share. New connections land on either worker: any
    that lands on a worker whose sibling holds a slow request must not borrow."""
    server = start_server(trained_registry, TORCH_THREADS="1", TORCH_THREADS_ALONE="2")
    server.wait_live()
    server.wait_versions(1)
    host, port = server.url.removeprefix("http://").split(":")
    body = encode(images[0])
    slow = []
    try:
        for _ in range(8):  # spread over both workers, with near certainty
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            slow.append(sock)
        time.sleep(0.5)
        before = _forwards(server)
        with server.fresh() as client:
            for image in images:
                response = client.post("/predict", content=encode(image),
                                       headers={"content-type": "image/png"})
                assert response.status_code == 200
        after = _forwards(server)
        assert after["1"] - before["1"] >= 1, (before, after)
        for sock in slow:  # the held requests still complete
            sock.sendall(body[10:])
            assert read_answer(sock).startswith(b"HTTP/1.1 200")
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "50000 100000\n"}, 1),  # cgroup v2, docker --cpus=0.5: rounded up
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "max 100000\n"}, None),  # no quota: the affinity
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage"}, None),
    ({}, None),  # no cgroup files at all
])
def test_usable_cores_follow_the_containers_cpu_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path, tmp_path / "no-such-file") == min(affinity, expected or affinity)


def test_usable_cores_follow_the_quota_of_a_parent_cgroup(tmp_path):
    """A systemd unit's CPUQuota= (cgroup v2) sits on the service's own cgroup or a parent."""
    unit = tmp_path / "system.slice" / "imgclf.service"
    unit.mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (unit / "cpu.max").write_text("max 100000\n")
    (unit.parent / "cpu.max").write_text("100000 100000\n")
    membership = tmp_path / "cgroup"
    membership.write_text("0::/system.slice/imgclf.service\n")
    assert usable_cores(tmp_path, membership) == 1
