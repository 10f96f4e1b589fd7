"""Intra-op threads by load: a worker's forward uses every core while the other gunicorn
workers are idle, and only its share of the cores (``TORCH_THREADS``) while they work.

With 2 workers on 2 cores each worker's share is one core, so a lone request ran on half the
machine: ResNet-18 on one 32x32 image takes 9.0 ms on 1 thread against 7.5 ms on 2 (bf16, this
AMX host), the MLP on 32 images 0.70 against 0.47 ms. Giving every worker all the cores all the
time oversubscribes them under load instead: an OpenMP region whose second thread waits for a
core stalls until the scheduler runs it. So each worker publishes until when it is busy in a
small table of shared memory, which the gunicorn master creates before it forks the workers
(``service/gunicorn.conf.py``), and the inference thread reads the other workers' entries
before each forward.

Every entry has one writer at a time (its worker's event loop; the master only when it hands
the slot out or the worker has exited); readers take plain reads. A stale read costs one
forward on a less suited thread count, never a wrong answer.
"""

import math
import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A worker counts as busy for this long after its last request ended: long enough to bridge the
# gaps between the requests of clients that keep it working, so that two workers with work do
# not both borrow and stall each other's OpenMP threads (counting only requests in flight, one
# run of bench/serve.py had the MLP's p99 at c=8 at 44 ms against a p50 of 3.4 ms; 7.5 against
# 3.6 ms with the hold), and short enough that a lone client's next request borrows again.
BUSY_HOLD_S = 0.05
_ENTRY = "d"  # per worker slot: CLOCK_MONOTONIC time until which it is busy (inf: working now)


class WorkerTable:
    """Until when each worker is busy, in anonymous shared memory: created in the gunicorn
    master, inherited by every worker it forks. ``time.monotonic()`` is one clock for all
    processes of the host. Entry 0 holds how many slots were ever handed out, so that readers
    scan only those."""

    def __init__(self, slots: int) -> None:
        self._memory = mmap.mmap(-1, (slots + 1) * 8)  # MAP_SHARED: the forks see one table
        self._entries = memoryview(self._memory).cast(_ENTRY)

    @property
    def slots(self) -> int:
        return len(self._entries) - 1

    def free_slot(self, taken: set[int]) -> int | None:
        """The lowest slot no live worker holds, cleared (None when all are held)."""
        for slot in range(self.slots):
            if slot not in taken:
                self.clear(slot)
                self._entries[0] = max(self._entries[0], slot + 1)
                return slot
        return None

    def clear(self, slot: int) -> None:
        """Idle: an exited worker, or one that has not served yet."""
        self._entries[slot + 1] = 0.0

    def set_busy_until(self, slot: int, until: float) -> None:
        self._entries[slot + 1] = until

    def others_busy(self, slot: int, now: float) -> bool:
        entries = self._entries
        used = int(entries[0])
        return (max(entries[1:slot + 1], default=0.0) > now
                or max(entries[slot + 2:used + 1], default=0.0) > now)


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup"),
                 membership: Path = Path("/proc/self/cgroup")) -> int:
    """The cores this process may really use: its CPU affinity (cpusets, ``docker
    --cpuset-cpus``), capped by the CPU quotas of its cgroup and the cgroups above it (``docker
    --cpus``, Kubernetes CPU limits, systemd ``CPUQuota=``), rounded up. ``os.cpu_count()``
    counts the host's cores: in a 2-CPU container on a 64-core host every worker would start 32
    threads on 2 CPUs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for quota in _cgroup_quotas(cgroup_root, membership):
        cores = min(cores or 1, math.ceil(quota))
    return max(1, cores or 1)


def _cgroup_quotas(root: Path, membership: Path) -> Iterator[float]:
    """CPU quotas in cores: cgroup v2's ``cpu.max`` of this process's cgroup and each ancestor,
    or cgroup v1's ``cfs_quota_us / cfs_period_us`` at the mount; nothing where unlimited."""
    directories = [root]
    try:  # cgroup v2: the line "0::/path" names this process's cgroup under the root
        for line in membership.read_text().splitlines():
            if line.startswith("0::/"):
                path = root / line[4:].strip()
                directories = [path, *path.parents[:len(path.relative_to(root).parts)]]
    except (OSError, ValueError):
        pass
    for directory in directories:
        fields = _read_fields(directory / "cpu.max")
        if len(fields) >= 2 and fields[0] != "max" and _positive(fields[1]):
            yield max(int(fields[0]), 1) / int(fields[1])
    quota = _read_fields(root / "cpu" / "cpu.cfs_quota_us")
    period = _read_fields(root / "cpu" / "cpu.cfs_period_us")
    if quota and period and quota[0] != "-1" and _positive(quota[0]) and _positive(period[0]):
        yield int(quota[0]) / int(period[0])


def _read_fields(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _positive(text: str) -> bool:
    return text.isdigit() and int(text) > 0


# The master's table (set by ``create_table``) and, in a worker, its own slot (``join``).
_table: WorkerTable | None = None
_slot: int | None = None
_SLOT_ATTRIBUTE = "core_share_slot"


def create_table(slots: int = 1024) -> None:
    """In the gunicorn master, before forking: the table every worker will share."""
    global _table
    _table = WorkerTable(slots)


def assign_slot(worker: object, live_workers: list[object]) -> None:
    """In the master (gunicorn's ``pre_fork``): give ``worker`` a slot no live worker holds.
    Without a free slot the worker never borrows cores, and counts for nobody."""
    if _table is None:
        return
    taken = {getattr(other, _SLOT_ATTRIBUTE, None) for other in live_workers}
    setattr(worker, _SLOT_ATTRIBUTE, _table.free_slot(taken))


def join(worker: object) -> None:
    """In the worker, right after the fork (``post_fork``): take the slot the master gave."""
    global _slot
    _slot = getattr(worker, _SLOT_ATTRIBUTE, None)


def release(worker: object) -> None:
    """In the master when a worker exited (``child_exit``): it has nothing in flight any more."""
    slot = getattr(worker, _SLOT_ATTRIBUTE, None)
    if _table is not None and slot is not None:
        _table.clear(slot)


class CoreShare:
    """One worker's view of the table: counts its requests, and picks the thread count of its
    next forward."""

    def __init__(self, table: WorkerTable | None, slot: int | None, *, shared_threads: int,
                 alone_threads: int) -> None:
        self._table = table if slot is not None else None
        self._slot = slot if slot is not None else 0
        self.shared_threads = shared_threads
        # Without a table the other workers are unknown: never borrow.
        self.alone_threads = alone_threads if self._table is not None else shared_threads
        self._threads_set: int | None = None
        self._in_flight = 0

    @classmethod
    def of_this_worker(cls, *, shared_threads: int, alone_threads: int | None) -> "CoreShare":
        """The process's slot when gunicorn's hooks gave it one, else a share that never borrows
        (a worker run without ``service/gunicorn.conf.py`` cannot see the others)."""
        return cls(_table, _slot, shared_threads=shared_threads,
                   alone_threads=max(shared_threads, alone_threads or usable_cores()))

    @contextmanager
    def request(self) -> Iterator[None]:
        """Mark this worker busy while the block runs, and for ``BUSY_HOLD_S`` after the last
        such block (event loop only)."""
        if self._table is None:
            yield
            return
        self._in_flight += 1
        if self._in_flight == 1:
            self._table.set_busy_until(self._slot, math.inf)
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._table.set_busy_until(self._slot, time.monotonic() + BUSY_HOLD_S)

    def threads_now(self) -> int:
        """All the cores (``alone_threads``) while no other worker is busy, else this worker's
        share."""
        if self._table is None or self._table.others_busy(self._slot, time.monotonic()):
            return self.shared_threads
        return self.alone_threads

    def set_threads_for_forward(self) -> None:
        """On the inference thread, right before a forward: OpenMP's and MKL's thread counts
        are per calling thread, so they are set there (and only when they change)."""
        import torch  # here: the gunicorn master imports this module and must not load torch

        threads = self.threads_now()
        if threads != self._threads_set:
            torch.set_num_threads(threads)
            self._threads_set = threads
