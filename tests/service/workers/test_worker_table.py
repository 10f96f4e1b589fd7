"""The table the gunicorn workers share (``service.workers.worker_table``): slots handed out and taken
back by the master, entries seen across a real fork."""

import math
import os
from types import SimpleNamespace

from support.service import table_of

from service.workers import worker_table
from service.workers.worker_table import WorkerTable


def test_the_master_gives_each_live_worker_its_own_slot(monkeypatch):
    monkeypatch.setattr(worker_table, "_table", WorkerTable(2))
    table = worker_table._table
    first, second, third = (SimpleNamespace() for _ in range(3))
    worker_table.assign_slot(first, [])
    worker_table.assign_slot(second, [first])
    worker_table.assign_slot(third, [first, second])
    assert (first.worker_table_slot, second.worker_table_slot) == (0, 1)
    assert third.worker_table_slot is None  # table full: it counts for nobody
    table.set_busy_until(0, math.inf)
    assert table.others_busy(1, now=0.0)
    worker_table.release(first)  # exited mid-request: its slot is free and idle
    assert not table.others_busy(1, now=0.0)
    replacement = SimpleNamespace()
    worker_table.assign_slot(replacement, [second])
    assert replacement.worker_table_slot == 0


def test_entries_written_in_a_forked_worker_are_seen_by_the_others():
    table = table_of(3)
    assert not table.others_busy(0, now=0.0)
    pid = os.fork()
    if pid == 0:  # a sibling worker
        table.set_busy_until(2, math.inf)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert table.others_busy(0, now=0.0) and not table.others_busy(2, now=0.0)


def test_a_worker_without_gunicorns_hooks_has_no_place_in_a_table(monkeypatch):
    monkeypatch.setattr(worker_table, "_table", WorkerTable(2))
    monkeypatch.setattr(worker_table, "_slot", None)
    assert worker_table.this_worker() is None
    worker = SimpleNamespace()
    worker_table.assign_slot(worker, [])
    worker_table.join(worker)
    assert worker_table.this_worker() == (worker_table._table, 0)
