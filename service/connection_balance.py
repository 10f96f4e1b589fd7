"""Keep-alive connections spread over the gunicorn workers, not piled on one.

The workers accept from one listening socket: whichever is back in ``accept()`` first takes a
new connection, and uvloop accepts every pending connection in one go. A client pool that
connects all at once can land on one worker: ``wrk -c64`` against 2 workers put 63 connections
on one worker and 1 on the other in 2 of 8 runs, and served 3.4k req/s against 4.4-5.4k in the
balanced runs (MLP, one PNG per request). Keep-alive then pins that split for as long as the
clients live: one worker queues nearly all the load while the other idles.

So each worker counts the connections that sent it a request in the last ``WINDOW_S`` and
publishes the count in the table the workers share (``service.worker_table``). A worker with
clearly more than the mean of the serving workers answers a few requests with ``Connection:
close``, as nginx does after ``keepalive_requests``: the close is announced in the answer, so
no request is lost. Those clients reconnect, and the worker waiting in ``accept()``, the less
busy one, most likely takes them. Each moved connection costs one reconnect, and moves happen
only while the split is uneven: 22 and 30 in two servers' 12 s of ``wrk -c64`` (about 0.05% of
the answers). With one worker stopped while wrk connected, then resumed, the split was 22/42 a
second later, against 0/64 for good without this.
"""

import asyncio
import math
from collections.abc import Callable

from service import metrics, worker_table
from service.worker_table import NOT_SERVING, WorkerTable

WINDOW_S = 0.25
# A worker hands connections off only above TOLERANCE x the mean + SLACK: small or momentary
# differences are not worth a reconnect, and at a few connections per worker they are noise.
TOLERANCE = 1.25
SLACK = 2.0


class ConnectionBalance:
    """One worker's side: counts its connections per window, publishes the count, and picks the
    answers that close their connection."""

    def __init__(self, table: WorkerTable, slot: int, *, serving: Callable[[], bool]) -> None:
        self._table = table
        self._slot = slot
        self._serving = serving  # False while loading: moving clients here would get them 503s
        self._clients: set[tuple] = set()
        self._to_hand_off = 0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of_this_worker(cls, *, serving: Callable[[], bool]) -> "ConnectionBalance | None":
        """None in a worker run without ``service/gunicorn.conf.py``: it cannot see the others."""
        place = worker_table.this_worker()
        return cls(*place, serving=serving) if place is not None else None

    def start(self) -> None:
        """End a window every ``WINDOW_S`` on the running event loop from now on."""
        loop = asyncio.get_running_loop()

        def end_window() -> None:
            self.end_window()
            self._timer = loop.call_later(WINDOW_S, end_window)

        self._timer = loop.call_later(WINDOW_S, end_window)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._to_hand_off = 0
        self._table.set_connections(self._slot, NOT_SERVING)

    def should_close(self, client: tuple | None) -> bool:
        """Count a request of ``client`` (``scope["client"]``: host and port, one pair per
        connection); True when its answer should close the connection. Event loop only."""
        if client is None:  # a Unix socket: connections have no identity
            return False
        if self._to_hand_off:
            self._to_hand_off -= 1
            self._clients.discard(client)
            metrics.CONNECTIONS_HANDED_OFF.inc()
            return True
        self._clients.add(client)
        return False

    def end_window(self) -> None:
        """Publish this window's count and decide how many connections to hand off in the next.
        Only half of the excess goes per window: the others' counts are up to a window old, and
        moving all of it at once would overshoot."""
        mine, self._clients = len(self._clients), set()
        if not self._serving():
            self._to_hand_off = 0
            self._table.set_connections(self._slot, NOT_SERVING)
            return
        self._table.set_connections(self._slot, mine)
        counts = self._table.serving_connections()
        mean = sum(counts) / len(counts)
        excess = mine - mean
        self._to_hand_off = math.ceil(excess / 2) if mine > TOLERANCE * mean + SLACK else 0
