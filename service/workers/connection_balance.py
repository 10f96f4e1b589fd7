"""Keep-alive connections spread over the gunicorn workers, not piled on one.

The workers accept from one listening socket: whichever is back in ``accept()`` first takes a
new connection, and uvloop accepts every pending connection in one go. A client pool that
connects all at once can land on one worker, and keep-alive then pins that split for as long as
the clients live: one worker queues nearly all the load while the other idles.

So each worker counts the connections that sent it a request in the last ``WINDOW_S`` (or
still wait for an answer) and publishes the count in the table the workers share
(``service.workers.worker_table``). A worker with clearly more than the mean of the serving
workers answers a few requests with ``Connection: close``, as nginx does after
``keepalive_requests``. The close is announced in the answer, so a client that waits for each
answer before sending the next request loses nothing (HTTP pipelining would lose the requests
sent after it, as with nginx). Those clients reconnect, and the worker waiting in ``accept()``,
the less busy one, most likely takes them. Moves happen only while the split is uneven; each
costs one reconnect. docs/performance.md has the measurements.
"""

import asyncio
import math
from collections.abc import Callable
from typing import Any

from service import metrics
from service.workers import worker_table
from service.workers.worker_table import NOT_SERVING, WorkerTable

WINDOW_S = 0.25
# A worker hands connections off only above TOLERANCE x the mean + SLACK: small or momentary
# differences are not worth a reconnect, and at a few connections per worker they are noise.
TOLERANCE = 1.25
SLACK = 2.0


def connection_of(send: Callable[..., Any]) -> object | None:
    """The connection a request came on: uvicorn's transport, one per TCP or Unix socket
    connection (``send`` is a bound method of uvicorn's request cycle). ``scope["client"]`` would
    not do: behind a trusted proxy uvicorn replaces it with the ``X-Forwarded-For`` address, one
    for all the connections of the proxy, and a Unix socket has none. None under another server;
    the end-to-end test of this module fails if uvicorn stops exposing it."""
    return getattr(getattr(send, "__self__", None), "transport", None)


class ConnectionBalance:
    """One worker's side: counts its connections per window, publishes the count, and picks the
    answers that close their connection. Event loop only."""

    def __init__(self, table: WorkerTable, slot: int, *, serving: Callable[[], bool]) -> None:
        self._table = table
        self._slot = slot
        self._serving = serving
        self._seen: set[object] = set()  # connections with a request in this window
        self._in_flight: set[object] = set()  # counted in the next window too (slow requests)
        self._to_hand_off = 0
        # A worker that does not serve (still loading) closes every answer's connection: moved
        # clients that landed on it would otherwise stay there and get 503s.
        self._closing_all = True
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
            try:
                self.end_window()
            finally:  # a failed window must not stop the ones after it
                self._timer = loop.call_later(WINDOW_S, end_window)

        self._timer = loop.call_later(WINDOW_S, end_window)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._to_hand_off = 0
        self._table.set_connections(self._slot, NOT_SERVING)

    def request_started(self, connection: object) -> bool:
        """Count a request on ``connection`` (:func:`connection_of`) that the client means to
        keep alive; True when its answer should close the connection."""
        if self._closing_all or self._to_hand_off:
            self._to_hand_off = max(0, self._to_hand_off - 1)
            metrics.CONNECTIONS_HANDED_OFF.inc()
            return True
        self._seen.add(connection)
        self._in_flight.add(connection)
        return False

    def request_finished(self, connection: object) -> None:
        self._in_flight.discard(connection)

    def end_window(self) -> None:
        """Publish this window's count and decide how many connections to hand off in the next.
        Only half of the excess goes per window: the others' counts are up to a window old, and
        moving all of it at once would overshoot."""
        mine, self._seen = len(self._seen), set(self._in_flight)
        self._closing_all = not self._serving()
        if self._closing_all:
            self._to_hand_off = 0
            self._table.set_connections(self._slot, NOT_SERVING)
            return
        self._table.set_connections(self._slot, mine)
        counts = self._table.serving_connections()
        mean = sum(counts) / len(counts)
        excess = mine - mean
        self._to_hand_off = math.ceil(excess / 2) if mine > TOLERANCE * mean + SLACK else 0


class HandOffMiddleware:
    """The ASGI seam of :class:`ConnectionBalance`: counts each keep-alive request's connection
    and adds ``Connection: close`` to the answers the balance picks. HTTP/1.0 and
    ``Connection: close`` requests close anyway: they neither count nor spend a hand-off."""

    def __init__(self, app: Any, balance: ConnectionBalance) -> None:
        self.app = app
        self.balance = balance

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _keeps_alive(scope):
            await self.app(scope, receive, send)
            return
        connection = connection_of(send)
        if connection is None:
            await self.app(scope, receive, send)
            return
        if self.balance.request_started(connection):
            async def send_closing(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
                await send(message)
        else:
            send_closing = send
        try:
            await self.app(scope, receive, send_closing)
        finally:
            self.balance.request_finished(connection)


def _keeps_alive(scope: Any) -> bool:
    if scope.get("http_version") == "1.0":  # uvicorn closes HTTP/1.0 connections
        return False
    return not any(name == b"connection" and b"close" in value.lower()
                   for name, value in scope["headers"])
