"""Metric updates in bulk: fewer writes into prometheus_client's memory-mapped files.

In multiprocess mode (``service.metrics``) every ``inc`` or ``observe`` is a locked write into
a memory-mapped file, and a request of one small image made several of them: enough to show in
the served rate of a small model (docs/performance.md). So the hot paths add their observations
up first and write the sums:

- :func:`observe_many`: the observations of one forward pass (its requests' queue waits and
  decode times) as one increment per bucket touched plus one for the sum;
- :class:`PendingMetrics`: the per-request metrics of the event loop, written whenever the
  worker falls idle, and ``FLUSH_INTERVAL_S`` after the first one held back while it is busy,
  so a scrape never lags behind by more than that.

Each batch or pending set belongs to one thread; nothing here takes a lock of its own.
"""

import asyncio
import bisect
from collections.abc import Sequence
from typing import Any

# Under load the request metrics of a worker reach /metrics at most this late (idle: at once).
FLUSH_INTERVAL_S = 0.1


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every ``v``, written as one increment per bucket touched
    plus one for the sum. ``histogram`` is a labelled child of a ``prometheus_client``
    ``Histogram``; its per-bucket values (``_upper_bounds``, ``_buckets``, ``_sum``) have no
    public bulk setter, so where they are missing (another layout) each value is observed on its
    own: same result, just slower. ``tests/service/workers/test_metric_batches.py`` holds the two
    ways to the same exposition text."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        index = bisect.bisect_left(bounds, value)  # the first bound >= value, as observe() picks
        if index < len(bounds) and value <= bounds[index]:  # NaN falls in no bucket
            counts[index] += 1
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    if values:
        total.inc(sum(values))


class PendingMetrics:
    """Counter increments and histogram observations held back and written together: one
    counter write per counter and :func:`observe_many` per histogram, at :meth:`flush`.
    Event loop only (the timer of :meth:`flush_when_due` runs there)."""

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}
        self._observations: dict[Any, list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def inc(self, counter: Any) -> None:
        self._counts[counter] = self._counts.get(counter, 0) + 1

    def observe(self, histogram: Any, value: float) -> None:
        observations = self._observations.get(histogram)
        if observations is None:
            observations = self._observations[histogram] = []
        observations.append(value)

    def flush_when_due(self, *, idle: bool) -> None:
        """Write now when the worker is ``idle`` (nothing else in flight), else at the latest
        ``FLUSH_INTERVAL_S`` from now."""
        if idle:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        observations, self._observations = self._observations, {}
        for counter, count in counts.items():
            counter.inc(count)
        for histogram, values in observations.items():
            observe_many(histogram, values)
