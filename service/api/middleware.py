"""The request-id, metrics and request-log layer: a request id on every response and log line,
request metrics, and with ``ACCESS_LOG`` one line per request (inside only
``service.workers.core_share.BusyMiddleware``).

It wraps Litestar's exception handling and the shedding at the door, so it also sees 404s,
errors and refusals, and labels metrics
with the matched route template (bounded cardinality), never the raw path.

A request line (logger ``service.access``) names the model and version that answered when the
answer says so: the head of a JSON body that has both ``model``/``model_name`` and
``version``/``model_version`` keys (``/predict`` and the v2 infer answers have them first, the
latter also before binary tensors).
Reading them there keeps the routes and the predictor free of logging concerns; it costs a
regex over at most 512 bytes, only while the request log is on.
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
access_log = logging.getLogger("service.access")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ANSWER_MODEL = re.compile(rb'"(?:model|model_name)"\s*:\s*"([^"\\]{1,128})"')
_ANSWER_VERSION = re.compile(rb'"(?:version|model_version)"\s*:\s*"([^"\\]{1,64})"')
_SNIFF_BYTES = 512


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
        logged = access_log.isEnabledFor(logging.INFO)
        answered: list[bytes] = []  # the head of a JSON answer, read for its model and version

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = headers = [*message.get("headers", ()), id_header]
                if logged and any(_json_head(name.lower(), value) for name, value in headers):
                    answered.append(b"")
            elif answered == [b""]:
                answered[0] = bytes(message.get("body", b"")[:_SNIFF_BYTES])
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
                log.warning("%s %s -> %d in %.1f ms", method, _printable_path(scope), status, elapsed * 1e3)
            if logged:
                _log_request(scope, status, elapsed, answered[0] if answered else b"")
            REQUEST_ID.reset(token)


def _log_request(scope: Scope, status: int, elapsed: float, answer_head: bytes) -> None:
    """The request line: ``client "METHOD /path" status latency [model vVERSION]`` as text, the
    same as fields of its record (``service.logs.REQUEST_FIELDS``) for the JSON format."""
    client = scope.get("client")
    client_text = f"{client[0]}:{client[1]}" if client else "-"
    model = version = None
    if answer_head:
        found_model, found_version = _ANSWER_MODEL.search(answer_head), _ANSWER_VERSION.search(answer_head)
        if found_model and found_version:
            model, version = found_model[1].decode(errors="replace"), found_version[1].decode(errors="replace")
    path = _printable_path(scope)
    latency_ms = round(elapsed * 1e3, 3)
    served = f" {model} v{version}" if model else ""
    access_log.info('%s "%s %s" %d %.1f ms%s', client_text, scope["method"], path, status, latency_ms,
                    served, extra={"client": client_text, "method": scope["method"], "path": path,
                                   "status": status, "latency_ms": latency_ms, "model": model, "version": version})


def _json_head(name: bytes, value: bytes) -> bool:
    """Whether an answer with this header starts with JSON: a JSON body, or a v2 answer with
    binary tensors (a JSON header of Inference-Header-Content-Length bytes comes first)."""
    return (name == b"content-type" and value.startswith(b"application/json")) or (
        name == b"inference-header-content-length")


def _printable_path(scope: Scope) -> str:
    """The request path for a log line: ASGI's path is percent-decoded, and a ``%0A`` in it
    must not split a line or forge one."""
    path = scope["path"]
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
