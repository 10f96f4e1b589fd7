"""Metric writes in bulk (service.workers.metric_batches) give exactly what one write per observation
gives, in a single process and in prometheus_client's multiprocess mode, and held-back request
metrics reach the registry when the worker falls idle or the flush interval has passed."""

import asyncio
import os
import subprocess
import sys
import textwrap

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from support import REPO

from service.workers import metric_batches
from service.workers.metric_batches import PendingMetrics, observe_many

BUCKETS = (0.25, 0.5, 1.0, 2.0)
# Binary fractions, so that the sum is exact in any order; on the bounds, between them, above
# the last one, zero and negative.
VALUES = [0.25, 0.125, 0.5, 0.75, 1.0, 3.0, 2.0, 0.0, -1.0, 0.5, 1.5]


def _exposition(observe) -> str:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", ["model"], buckets=BUCKETS, registry=registry)
    observe(histogram.labels("m"))
    return "\n".join(line for line in generate_latest(registry).decode().splitlines()
                     if "_created" not in line)


def test_observe_many_gives_the_exposition_of_one_observe_per_value():
    def one_by_one(child):
        for value in VALUES:
            child.observe(value)

    expected = _exposition(one_by_one)
    assert 'h_seconds_bucket{le="0.25",model="m"} 4.0' in expected  # the test means something
    assert _exposition(lambda child: observe_many(child, VALUES)) == expected


def test_observe_many_of_nothing_writes_nothing():
    assert _exposition(lambda child: observe_many(child, [])) == _exposition(lambda child: None)


def test_observe_many_falls_back_to_observe_on_an_unknown_histogram_layout():
    class Plain:
        def __init__(self):
            self.seen = []

        def observe(self, value):
            self.seen.append(value)

    plain = Plain()
    observe_many(plain, VALUES)
    assert plain.seen == VALUES


def test_observe_many_matches_observe_in_multiprocess_mode(tmp_path):
    """The service's mode: values live in memory-mapped files and /metrics sums the files."""
    script = textwrap.dedent(f"""
        from prometheus_client import CollectorRegistry, Histogram, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
        from service.workers.metric_batches import observe_many
        one = Histogram("one_seconds", "h", buckets={BUCKETS!r})
        bulk = Histogram("bulk_seconds", "h", buckets={BUCKETS!r})
        for value in {VALUES!r}:
            one.observe(value)
        observe_many(bulk, {VALUES!r})
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=60, cwd=REPO).stdout
    one = sorted(line.replace("one_seconds", "X") for line in out.splitlines()
                 if line.startswith("one_seconds"))
    bulk = sorted(line.replace("bulk_seconds", "X") for line in out.splitlines()
                  if line.startswith("bulk_seconds"))
    assert 'X_count 11.0' in one
    assert bulk == one


def _counter_and_histogram():
    registry = CollectorRegistry()
    counter = Counter("requests", "r", registry=registry)
    histogram = Histogram("latency_seconds", "l", buckets=BUCKETS, registry=registry)

    def written() -> tuple[float, float]:
        return (registry.get_sample_value("requests_total"),
                registry.get_sample_value("latency_seconds_count"))
    return counter, histogram, written


def test_pending_metrics_are_written_at_once_when_the_worker_falls_idle():
    counter, histogram, written = _counter_and_histogram()

    async def main():
        pending = PendingMetrics()
        pending.inc(counter)
        pending.observe(histogram, 0.3)
        pending.flush_when_due(idle=True)
        return written()

    assert asyncio.run(main()) == (1.0, 1.0)


def test_pending_metrics_of_a_busy_worker_are_written_within_the_flush_interval(monkeypatch):
    monkeypatch.setattr(metric_batches, "FLUSH_INTERVAL_S", 0.05)
    counter, histogram, written = _counter_and_histogram()

    async def main():
        pending = PendingMetrics()
        for _ in range(3):
            pending.inc(counter)
            pending.observe(histogram, 0.3)
            pending.flush_when_due(idle=False)
        held = written()
        await asyncio.sleep(0.2)
        return held, written()

    held, later = asyncio.run(main())
    assert held == (0.0, 0.0)
    assert later == (3.0, 3.0)


def test_flushing_pending_metrics_cancels_the_timer_and_writes_each_once(monkeypatch):
    monkeypatch.setattr(metric_batches, "FLUSH_INTERVAL_S", 0.05)
    counter, histogram, written = _counter_and_histogram()

    async def main():
        pending = PendingMetrics()
        pending.inc(counter)
        pending.flush_when_due(idle=False)
        pending.flush()  # e.g. the app shutting down
        await asyncio.sleep(0.2)
        return written()

    assert asyncio.run(main()) == (1.0, 0.0)
