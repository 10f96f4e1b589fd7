"""Lend a lone forward pass the cores that the other workers leave idle.

Each gunicorn worker computes with ``TORCH_THREADS`` intra-op threads (cores // workers by
default): the right share while every worker is busy. But a request that arrives at a quiet
server would then leave the other workers' cores idle; at concurrency 1 a ResNet-18 forward
took ~19 ms on one of the two cores instead of ~15 ms on both. So the workers count, in a
counter the gunicorn master shares with them, how many forwards are running; a worker that
finds no other forward running uses every core of the server's budget.

The counter is created in the master (``service/gunicorn.conf.py`` calls :func:`share`) and
inherited by the workers it forks. Without it (one process: tests, a bare ``uvicorn``) every
forward keeps the worker's own threads. A worker killed in the middle of a forward leaves the
counter one too high: the others then stay at their own share, as they would without sharing.
"""

import contextlib
import multiprocessing
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized

_running: Synchronized | None = None


def share() -> None:
    """In the gunicorn master, before it forks: workers forked afterwards share one counter."""
    global _running
    _running = multiprocessing.Value("i", 0)


class IdleCores:
    """How many intra-op threads the next forward of this worker may use."""

    def __init__(self, own_threads: int, total_threads: int) -> None:
        self.own_threads = own_threads
        self.total_threads = max(own_threads, total_threads)

    @property
    def shared(self) -> bool:
        return _running is not None and self.total_threads > self.own_threads

    @contextlib.contextmanager
    def forward(self) -> Iterator[int]:
        """Count a forward as running; yields its thread count (all of them when it is alone)."""
        counter = _running
        if counter is None or not self.shared:
            yield self.own_threads
            return
        with counter.get_lock():
            alone = counter.value == 0
            counter.value += 1
        try:
            yield self.total_threads if alone else self.own_threads
        finally:
            with counter.get_lock():
                counter.value -= 1
