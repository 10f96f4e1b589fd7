"""Load shedding at the door: while the default model's queue refuses new work, a
``POST /predict`` for it is answered 503 + ``Retry-After`` before routing, before its body is
read and without Litestar's exception handling.

Refusing has to cost much less than serving: clients that retry at once turn refusals into
most of an overloaded worker's CPU, and every microsecond a refusal takes is taken from the
requests being served (docs/performance.md has the figures). Requests that name a model go the
normal way; the predictor's own admission check refuses them just the same, only later.
"""

import json
from collections.abc import Callable

from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import QueueFullError


class ShedWhenOverloaded:
    """ASGI middleware: ``refusal()`` says why the default model takes no more work now (None
    when it does); requests to ``path`` without a ``model`` parameter get the 503 here."""

    def __init__(self, app: ASGIApp, *, path: str, refusal: Callable[[], str | None]) -> None:
        self.app = app
        self.path = path
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"] == self.path
                and scope["method"] == "POST" and b"model=" not in scope["query_string"]
                and (reason := self.refusal()) is not None):
            scope["path_template"] = self.path  # for the request metrics: a bounded label
            await _refuse(send, reason, scope.get("state", {}).get("request_id"))
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, reason: str, request_id: str | None) -> None:
    """The same JSON 503 the exception handler writes for :class:`QueueFullError`."""
    body = json.dumps({"error": QueueFullError.code, "detail": reason,
                       "request_id": request_id}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode())
                for name, value in QueueFullError.headers.items()]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
