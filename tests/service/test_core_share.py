"""Borrowing idle workers' cores (``service.core_share``): the shared table across a real fork,
the choice of threads, and the real gunicorn server wiring it up."""

import math
import os
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from service_support import encode

from service import core_share
from service.core_share import BUSY_HOLD_S, CoreShare, WorkerTable, usable_cores


def share(table: WorkerTable, slot: int) -> CoreShare:
    return CoreShare(table, slot, shared_threads=1, alone_threads=2)


def test_a_forked_worker_busy_in_the_shared_table_keeps_the_others_on_their_share():
    table = WorkerTable(4)
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


def test_a_worker_stays_busy_for_the_hold_after_its_last_request():
    """Two workers whose clients keep both working must not both borrow between requests."""
    table = WorkerTable(2)
    mine, sibling = share(table, 0), share(table, 1)
    with sibling.request(), sibling.request():  # two in flight: busy until the last one ends
        assert mine.threads_now() == 1
    assert mine.threads_now() == 1  # ended just now: still within the hold
    time.sleep(BUSY_HOLD_S * 1.5)
    assert mine.threads_now() == 2
    with mine.request():  # a worker's own requests never keep it from borrowing
        assert mine.threads_now() == 2


def test_the_master_gives_each_live_worker_its_own_slot(monkeypatch):
    monkeypatch.setattr(core_share, "_table", WorkerTable(2))
    first, second, third = (SimpleNamespace() for _ in range(3))
    core_share.assign_slot(first, [])
    core_share.assign_slot(second, [first])
    core_share.assign_slot(third, [first, second])
    assert (first.core_share_slot, second.core_share_slot) == (0, 1)
    assert third.core_share_slot is None  # table full: it never borrows
    core_share._table.set_busy_until(0, math.inf)
    core_share.release(first)  # exited mid-request: its slot is free and idle again
    replacement = SimpleNamespace()
    core_share.assign_slot(replacement, [second])
    assert replacement.core_share_slot == 0
    assert share(core_share._table, 1).threads_now() == 2


def test_without_gunicorns_table_a_worker_never_borrows(monkeypatch):
    monkeypatch.setattr(core_share, "_table", None)
    monkeypatch.setattr(core_share, "_slot", None)
    alone = CoreShare.of_this_worker(shared_threads=1, alone_threads=2)
    with alone.request():
        assert alone.threads_now() == 1
    assert alone.alone_threads == 1


def test_the_thread_count_is_set_on_the_thread_that_runs_the_forward():
    """OpenMP keeps its thread count per calling thread: setting it anywhere else does nothing
    for the inference thread."""
    table = WorkerTable(2)
    mine = share(table, 0)
    seen = []

    def inference_thread() -> None:
        seen.append((mine.set_threads_for_forward(), torch.get_num_threads()))
        table.set_busy_until(1, math.inf)
        seen.append((mine.set_threads_for_forward(), torch.get_num_threads()))

    before = torch.get_num_threads()
    worker = threading.Thread(target=inference_thread)
    worker.start()
    worker.join()
    torch.set_num_threads(before)
    assert seen == [(2, 2), (1, 1)]


@pytest.mark.parametrize("alone", ["2", "1"])
def test_gunicorn_workers_borrow_idle_cores_only_when_allowed(start_server, trained_registry,
                                                             images, alone):
    """The real server (2 workers, 1 thread each): one client at a time leaves a worker idle,
    so forwards run on 2 threads, unless TORCH_THREADS_ALONE keeps them to 1."""
    server = start_server(trained_registry, TORCH_THREADS="1", TORCH_THREADS_ALONE=alone)
    server.wait_live()
    server.wait_versions(1)
    for image in images:
        response = server.client.post("/predict", content=encode(image),
                                      headers={"content-type": "image/png"})
        assert response.status_code == 200
    borrowed = sum(server.metric(r'imgclf_forwards_total\{model="[^"]+",threads="2"\}'))
    own = sum(server.metric(r'imgclf_forwards_total\{model="[^"]+",threads="1"\}'))
    assert borrowed + own >= len(images)
    if alone == "2":
        assert borrowed >= len(images) - 1, (borrowed, own)
    else:
        assert borrowed == 0


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
    assert usable_cores(tmp_path) == min(affinity, expected or affinity)
