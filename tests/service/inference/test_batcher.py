"""The micro-batcher on its own: images (not requests) are counted, versions never mix, a full
or stalled queue refuses at once, a failed forward fails only its batch, a lone request does
not wait, clients answered together are batched together again."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.errors import InferenceError, QueueFullError
from service.inference.batcher import MicroBatcher


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


class Recorder:
    """A fake forward: records each batch as (key, [payload sizes]) and echoes payloads."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, key, payloads):
        time.sleep(self.delay)
        if key == self.fail_on:
            raise RuntimeError("boom")
        self.batches.append((key, [len(p) for p in payloads]))
        return [f"{key}:{p}" for p in payloads]


def _batcher(recorder, **kwargs) -> MicroBatcher:
    options = {"max_batch": 8, "max_wait_s": 0.0, "max_queue": 100, "max_queue_wait_s": 10.0}
    options |= kwargs
    return MicroBatcher(recorder, name="test", executor=ThreadPoolExecutor(1), **options)


def test_concurrent_submissions_share_batches_counted_in_images():
    recorder = Recorder(delay=0.05)

    async def main():
        batcher = _batcher(recorder)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit("v1", "abc", 3) for _ in range(6)))
        await batcher.stop()
        return results

    assert _run(main()) == ["v1:abc"] * 6
    sizes = [sum(sizes) for _, sizes in recorder.batches]
    assert sum(sizes) == 18 and max(sizes) > 3 and all(size <= 8 for size in sizes)


def test_items_of_different_versions_never_share_a_batch():
    recorder = Recorder(delay=0.02)

    async def main():
        batcher = _batcher(recorder)
        batcher.start()
        keys = ["old", "old", "new", "old", "new", "new"]
        results = await asyncio.gather(*(batcher.submit(key, "x", 1) for key in keys))
        await batcher.stop()
        return keys, results

    keys, results = _run(main())
    # A batch runs with one key; an item batched with another version would echo that key.
    assert results == [f"{key}:x" for key in keys]
    assert {key for key, _ in recorder.batches} == {"old", "new"}


def test_full_queue_refuses_at_once():
    recorder = Recorder(delay=0.3)

    async def main():
        batcher = _batcher(recorder, max_queue=2, max_batch=1)
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit("v", "x", 1)) for _ in range(5)]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = _run(main())
    refused = [o for o in outcomes if isinstance(o, QueueFullError)]
    assert refused and QueueFullError.headers["Retry-After"]
    assert all(o == "v:x" for o in outcomes if not isinstance(o, Exception))


def test_queue_refuses_once_its_oldest_image_has_waited_too_long_then_recovers():
    recorder = Recorder(delay=0.8)  # far longer than the checks below need: a slow CI host

    async def main():
        # Room for 100 images: only the time bound can refuse here.
        batcher = _batcher(recorder, max_batch=1, max_queue_wait_s=0.1)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit("v", "a", 1))  # its forward takes 0.8 s
        await asyncio.sleep(0.02)
        queued = asyncio.ensure_future(batcher.submit("v", "b", 1))  # waits behind it
        await asyncio.sleep(0.2)
        with pytest.raises(QueueFullError, match=r"waited \d+ ms \(MAX_QUEUE_WAIT_MS=100\)"):
            await batcher.submit("v", "c", 1)
        served = await asyncio.gather(running, queued)
        after = await batcher.submit("v", "d", 1)  # drained: welcome again
        await batcher.stop()
        return served, after

    assert _run(main()) == (["v:a", "v:b"], "v:d")


def test_failed_forward_fails_only_its_batch():
    recorder = Recorder(fail_on="bad")

    async def main():
        batcher = _batcher(recorder)
        batcher.start()
        with pytest.raises(InferenceError, match="inference failed") as failure:
            await batcher.submit("bad", "x", 1)
        assert "boom" not in str(failure.value)  # the reason goes to the log, not the client
        result = await batcher.submit("good", "y", 1)
        await batcher.stop()
        return result

    assert _run(main()) == "good:y"


def test_lone_request_does_not_wait_but_announced_ones_are_waited_for():
    recorder = Recorder()

    async def main():
        batcher = _batcher(recorder, max_wait_s=1.0)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit("v", "x", 1)
        lone = time.perf_counter() - started

        async def late():
            with batcher.incoming():  # e.g. still receiving its body
                await asyncio.sleep(0.05)
                return await batcher.submit("v", "late", 1)

        both = await asyncio.gather(batcher.submit("v", "early", 1), late())
        await batcher.stop()
        return lone, both

    lone, both = _run(main())
    assert lone < 0.5
    assert both == ["v:early", "v:late"]
    assert recorder.batches[-1] == ("v", [5, 4])  # one forward for both


def test_clients_answered_together_that_come_back_apart_share_the_next_batch():
    """A closed loop of clients (each sends its next request when answered) must not split into
    alternating half batches: the clients the last batch answered are waited for."""
    recorder = Recorder()

    async def main():
        batcher = _batcher(recorder, max_wait_s=1.0)
        batcher.start()
        await asyncio.gather(*(batcher.submit("v", "a", 1) for _ in range(4)))

        async def comes_back_after(delay):
            await asyncio.sleep(delay)
            return await batcher.submit("v", "b", 1)

        await asyncio.gather(*(comes_back_after(0.03 * i) for i in range(4)))
        await batcher.stop()

    _run(main())
    assert recorder.batches == [("v", [1, 1, 1, 1]), ("v", [1, 1, 1, 1])]


def test_a_lone_client_that_comes_back_does_not_wait():
    recorder = Recorder()

    async def main():
        batcher = _batcher(recorder, max_wait_s=1.0)
        batcher.start()
        await batcher.submit("v", "first", 1)
        started = time.perf_counter()
        await batcher.submit("v", "again", 1)  # the one client the last batch answered
        again = time.perf_counter() - started
        await batcher.stop()
        return again

    assert _run(main()) < 0.5


def test_an_exception_returned_for_one_item_fails_that_item_only():
    def forward(key, payloads):
        return [ValueError(p) if p == "bad" else f"ok:{p}" for p in payloads]

    async def main():
        batcher = MicroBatcher(forward, name="test", executor=ThreadPoolExecutor(1), max_batch=8,
                               max_wait_s=0.0, max_queue=100, max_queue_wait_s=10.0)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit("v1", p, 1) for p in ("a", "bad", "b")),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    first, failed, last = _run(main())
    assert (first, last) == ("ok:a", "ok:b")
    assert isinstance(failed, ValueError) and str(failed) == "bad"


def test_an_idle_worker_takes_a_request_of_many_parts_whole():
    recorder = Recorder(delay=0.01)

    async def main():
        batcher = _batcher(recorder, max_queue=8, max_batch=4)
        batcher.start()
        try:  # 12 images in 3 parts, over MAX_QUEUE: admitted whole, as the empty queue allows
            return await batcher.submit_all("v", [("abcd", 4)] * 3)
        finally:
            await batcher.stop()

    assert _run(main()) == ["v:abcd"] * 3
    assert sum(sum(sizes) for _, sizes in recorder.batches) == 12


def test_a_busy_worker_refuses_all_parts_of_a_request_or_none():
    recorder = Recorder(delay=0.3)

    async def main():
        batcher = _batcher(recorder, max_queue=8, max_batch=4)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit("v", "ab", 2))
            await asyncio.sleep(0.05)  # its batch is running
            second = asyncio.ensure_future(batcher.submit("v", "ab", 2))  # queued: 2 images
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError):
                await batcher.submit_all("v", [("abcd", 4), ("abcd", 4)])  # 2 + 8 > 8
            return await asyncio.gather(first, second)
        finally:
            await batcher.stop()

    assert _run(main()) == ["v:ab", "v:ab"]
    assert all(sizes == [2] for _, sizes in recorder.batches)  # no part of the refused one ran
