"""The request-id and metrics layer: a request id on every response and log line, and request
metrics (inside only ``service.workers.core_share.BusyMiddleware``).

It wraps Litestar's exception handling and the shedding at the door, so it also sees 404s,
errors and refusals, and labels metrics
with the matched route template (bounded cardinality), never the raw path.
"""

import itertools
import logging
import re
import secrets
import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.logs import REQUEST_ID

log = logging.getLogger(__name__)
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ObservabilityMiddleware:
    """Request id (kept from a sane incoming ``X-Request-ID``, else new) + request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cache: dict[tuple[str, str, int], tuple] = {}
        # Ids are a random per-worker prefix + a counter: unique across workers and restarts,
        # with no syscall per request (os.urandom releases the GIL, which hands the event loop's
        # turn to the inference thread).
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count()

    def _children(self, method: str, route: str, status: int) -> tuple:
        """Labelled metric children, resolved once per (method, route, status)."""
        key = (method, route, status)
        children = self._cache.get(key)
        if children is None:
            children = (metrics.REQUESTS.labels(method, route, str(status)),
                        metrics.REQUEST_LATENCY.labels(method, route))
            self._cache[key] = children
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _CLIENT_ID.match(candidate) else ""
        request_id = request_id or f"{self._id_prefix}{next(self._id_counter):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            counter, histogram = self._children(method, route, status)
            counter.inc()
            histogram.observe(elapsed)
            if status >= 500 and status != 503:  # 503s (not ready, overload) are expected
                log.warning("%s %s -> %d in %.1f ms", method, scope["path"], status, elapsed * 1e3)
            REQUEST_ID.reset(token)
