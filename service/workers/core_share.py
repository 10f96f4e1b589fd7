"""Intra-op threads by load: a worker's forward uses every core while the other gunicorn
workers are idle, and only its share of the cores (``TORCH_THREADS``) while they work.

With 2 workers on 2 cores each worker's share is one core, so a lone request would run on half
the machine. Giving every worker all the cores all the time oversubscribes them under load
instead: an OpenMP region whose second thread waits for a core stalls until the scheduler runs
it. So each worker publishes until when it is busy in the table the workers share
(``service.workers.worker_table``), and the inference thread reads the other workers' entries
before each forward. docs/performance.md has the measurements.
"""

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.workers import worker_table
from service.workers.worker_table import WorkerTable

# A worker counts as busy for this long after its last request ended: long enough to bridge the
# gaps between the requests of clients that keep it working, so that two workers with work do
# not both borrow and stall each other's OpenMP threads (that took the MLP's p99 at c=8 to ten
# times its p50), and short enough that a lone client's next request borrows again.
BUSY_HOLD_S = 0.05


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
        table, slot = worker_table.this_worker() or (None, None)
        return cls(table, slot, shared_threads=shared_threads,
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
        import torch  # here: settings import this module (usable_cores) and stay free of torch

        threads = self.threads_now()
        if threads != self._threads_set:
            torch.set_num_threads(threads)
            self._threads_set = threads


class BusyMiddleware:
    """The ASGI seam of :class:`CoreShare`: this worker counts as busy while it answers a
    request, so that its siblings' forwards keep to their own cores meanwhile."""

    def __init__(self, app: Any, cores: CoreShare) -> None:
        self.app = app
        self.cores = cores

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.cores.request():
            await self.app(scope, receive, send)

