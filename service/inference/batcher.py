"""Dynamic micro-batching: images of concurrent requests share one forward pass.

Requests submit ``(payload, count)`` parts under a key (``submit_all``); a single consumer
task per worker takes queued items, oldest first, until the batch holds ``max_batch`` images,
and runs them through ``run_batch`` on one inference thread, so the event loop keeps accepting
and parsing requests meanwhile. That overlap is the main batching mechanism: while one batch runs, the next fills
up, at no cost in latency when the server is idle. On top of it, a batch that is not full waits
at most ``max_wait_s`` for more images, and only while more are on their way: requests whose
body this worker is still receiving (:meth:`MicroBatcher.incoming`), and the clients the last
batch answered, until as many requests as it answered have come back. So a lone request never
waits for nobody, and a client that comes back alone does not wait either.

The second case is what keeps batches full under a steady load. Clients answered together
come back over a millisecond or two, while the next batch starts with whatever queued during
the last one: without that wait, 32 clients per worker split into two alternating halves that
never merge (half-full batches; docs/performance.md).

Items with different keys (a model version swapped by hot reload) never share a batch.

Admission is bounded two ways, and a refused request gets
:class:`~service.errors.QueueFullError` (503 + ``Retry-After``) at once instead of a latency
that piles up. By time: once the oldest queued image has waited ``max_queue_wait_s``, the
worker is not keeping up and new requests are refused until the queue drains (the sojourn
time CoDel watches: it needs no model of the throughput, so it fits a 1 ms MLP and a 100 ms
ResNet batch alike, and a burst that the worker will clear in time is taken whole). By count:
``max_queue`` images, a backstop for memory. Refusing by count alone sheds load that
would have been served in time, and clients that retry at once turn such refusals into most of
the workers' CPU.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service import metrics
from service.errors import InferenceError, QueueFullError

log = logging.getLogger(__name__)
K = TypeVar("K")


@dataclass
class _Item(Generic[K]):
    key: K
    payload: Any  # what run_batch takes (service.inference.runner.Job)
    count: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[K]):
    """Gathers submitted items into batches of at most ``max_batch`` images.

    ``run_batch(key, payloads) -> list of results`` runs on the inference thread and returns one
    result per payload, in order; an exception instance as a result fails that payload alone.
    """

    def __init__(
        self,
        run_batch: Callable[[K, list[Any]], list[Any]],
        *,
        name: str,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        max_queue_wait_s: float,
        executor: ThreadPoolExecutor,
    ) -> None:
        self._run_batch = run_batch
        self.name = name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_queue_wait_s = max_queue_wait_s
        self._executor = executor
        self._queue: deque[_Item[K]] = deque()
        self._queued_images = 0
        self._incoming = 0
        self._returning = 0  # requests the last batch answered that have not come back yet
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        # Labelled metric children resolved once: the hot path only increments them.
        self._m_depth = metrics.QUEUE_DEPTH.labels(name)
        self._m_wait = metrics.QUEUE_WAIT.labels(name)
        self._m_rejected = metrics.QUEUE_REJECTED.labels(name)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._consume(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(InferenceError("the worker is shutting down"))
        self._queue.clear()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request whose body is still being received: batches may wait a little for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    def refusal(self, count: int = 1) -> str | None:
        """Why ``count`` more images must be refused now, or None when they are welcome."""
        if not self._queued_images:
            return None  # an empty queue takes any request, however large
        if self._queue:
            waited = time.perf_counter() - self._queue[0].enqueued
            if waited > self.max_queue_wait_s:
                return (f"the inference queue is not keeping up: its oldest image has waited "
                        f"{waited * 1e3:.0f} ms (MAX_QUEUE_WAIT_MS="
                        f"{self.max_queue_wait_s * 1e3:g}); retry shortly")
        if self._queued_images + count > self.max_queue:
            return (f"the inference queue is full ({self._queued_images} images waiting, "
                    f"MAX_QUEUE={self.max_queue}); retry shortly")
        return None

    def refuse_now(self, count: int = 1) -> str | None:
        """:meth:`refusal`, counted as a rejected request when it refuses."""
        reason = self.refusal(count)
        if reason is not None:
            self._m_rejected.inc()
        return reason

    def check_capacity(self, count: int = 1) -> None:
        """Raise QueueFullError (counted) when :meth:`refusal` refuses ``count`` more images.
        The predictor asks before it reads a request's body too, so that an overloaded worker
        refuses cheaply instead of receiving and decoding images it would throw away."""
        reason = self.refuse_now(count)
        if reason is not None:
            raise QueueFullError(reason)

    async def submit(self, key: K, payload: Any, count: int) -> Any:
        """Queue ``count`` images and wait for their result; raises QueueFullError when
        :meth:`refusal` refuses them."""
        return (await self.submit_all(key, [(payload, count)]))[0]

    async def submit_all(self, key: K, parts: list[tuple[Any, int]], *,
                         admitted: bool = False) -> list[Any]:
        """Queue the ``(payload, count)`` parts of one request and wait for all their results.

        Admission is all or none (a request larger than ``max_batch`` comes in batch-sized
        parts): admitting some parts would compute images whose request is refused anyway,
        and an idle worker must take any request whole, however large. ``admitted``: the
        request was queued once already (and handed back), so it is not refused now.
        """
        if not admitted:
            self.check_capacity(sum(count for _, count in parts))
        loop = asyncio.get_running_loop()
        futures = []
        for payload, count in parts:
            futures.append(loop.create_future())
            self._queue.append(_Item(key, payload, count, futures[-1]))
            self._queued_images += count
        self._returning = max(0, self._returning - 1)  # most likely one of them
        self._m_depth.set(self._queued_images)
        self._wakeup.set()
        if len(futures) == 1:
            return [await futures[0]]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:  # every part's outcome is retrieved; the first failure is raised
            if isinstance(result, BaseException):
                raise result
        return results

    def _take(self, batch: list[_Item[K]], images: int) -> int:
        """Move queued items of the same key into ``batch`` while they fit; returns images."""
        while self._queue:
            head = self._queue[0]
            if head.key is not batch[0].key or images + head.count > self.max_batch:
                break
            batch.append(self._queue.popleft())
            images += head.count
        return images

    def _more_on_the_way(self) -> bool:
        """Requests are being received, or clients just answered may still come back."""
        return self._incoming > 0 or self._returning > 0

    async def _gather(self) -> list[_Item[K]]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = [self._queue.popleft()]
        images = batch[0].count
        await asyncio.sleep(0)  # let handlers that are ready to submit do so first
        images = self._take(batch, images)
        if images < self.max_batch and self.max_wait_s > 0 and self._more_on_the_way():
            deadline = time.perf_counter() + self.max_wait_s
            while images < self.max_batch and self._more_on_the_way() and not self._queue:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                images = self._take(batch, images)
        images = sum(item.count for item in batch)
        self._queued_images -= images
        self._m_depth.set(self._queued_images)
        return batch

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            now = time.perf_counter()
            for item in batch:
                self._m_wait.observe(now - item.enqueued)
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, batch[0].key, [i.payload for i in batch]
                )
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(InferenceError("the worker is shutting down"))
                raise
            except Exception:  # a failed forward fails its batch, never the worker
                log.exception("forward pass failed for a batch of %d request(s)", len(batch))
                for item in batch:  # the reason is in the log; clients get no internals
                    if not item.future.done():
                        item.future.set_exception(
                            InferenceError("inference failed; the server log has the details"))
                continue
            answered = 0
            for item, result in zip(batch, results, strict=True):
                if item.future.done():  # the client went away
                    continue
                answered += 1
                if isinstance(result, Exception):  # this item's own failure (e.g. a bad image)
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            self._returning = answered
