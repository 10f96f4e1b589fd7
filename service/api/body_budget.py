"""``BodyBudget``: the request bodies one worker holds at once, and each one's size limit.

Shared by every body-reading route of a worker (``/predict``, ``/feedback``): one bound on the
memory that concurrent uploads can take, whichever route they come through.
"""

from litestar.types import Receive

from service.errors import ClientDisconnectedError, PayloadTooLargeError, QueueFullError


class BodyBudget:
    """Request bodies of ``POST /predict``, read with two bounds: each body at most ``max_body``
    bytes (413, ``MAX_BODY_BYTES``, refused as soon as it is announced or streamed past it), and
    at most ``limit`` bytes of bodies held by this worker at once (``MAX_INFLIGHT_BYTES``):
    beyond it a request is refused with 503 (``Retry-After``) instead of buffered, so many
    concurrent large uploads cannot exhaust memory.

    Only bytes actually received count, so a client that announces a large body and sends
    nothing blocks nobody; an empty budget always admits one request, however large.
    """

    def __init__(self, limit: int, *, max_body: int) -> None:
        self.limit = limit
        self.max_body = max_body
        self.in_use = 0

    def _refuse(self) -> QueueFullError:
        return QueueFullError(
            f"this worker is already receiving {self.in_use} bytes of request bodies "
            f"(MAX_INFLIGHT_BYTES={self.limit}); retry shortly"
        )

    def _too_large(self, size: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body of {size} bytes or more exceeds MAX_BODY_BYTES={self.max_body}")

    async def read(self, receive: Receive, announced: int | None) -> bytes:
        """The whole body, from the ASGI ``receive`` of a request whose ``Content-Length`` is
        ``announced``; the caller must :meth:`release` ``len(body)``."""
        if announced is not None and announced > self.max_body:
            raise self._too_large(announced)
        if announced and self.in_use and self.in_use + announced > self.limit:
            raise self._refuse()
        chunks: list[bytes] = []
        taken = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnectedError(
                        f"the client went away after sending {taken} bytes of its body")
                chunk = message.get("body", b"")
                if chunk:
                    taken += len(chunk)
                    self.in_use += len(chunk)
                    if taken > self.max_body:
                        raise self._too_large(taken)
                    if self.in_use > self.limit and self.in_use > taken:
                        raise self._refuse()
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            self.in_use -= taken
            raise
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self, size: int) -> None:
        self.in_use -= size
