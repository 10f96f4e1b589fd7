"""Drift signals: what the served model sees and answers, against what it saw on its test split.

Called on the worker's one inference thread (``service.inference.runner``), so nothing here
takes a lock of its own. Per loaded version, a :class:`DriftMonitor`:

- counts the top-1 classes in ``imgclf_predictions_total{model,version,label}`` (one increment
  per class present in a batch, not per image);
- observes each image's top-1 probability in ``imgclf_prediction_confidence{model,version}``;
- keeps a ring of this worker's last ``DRIFT_WINDOW`` top-1 classes and sets
  ``imgclf_prediction_drift_psi{model,version}`` to their population stability index against
  the class shares the artifact recorded on its test split (``metadata["prediction_reference"]``).

The population stability index of live shares ``p`` against reference shares ``q``::

    PSI = sum over classes of (p - q) * ln(p / q)

each share floored at :data:`EPSILON` first, so that a class absent from the window (or from
the reference) adds a large but finite term instead of infinity. It is the symmetrised
Kullback-Leibler divergence; by the usual reading, under 0.1 is no change, 0.1-0.25 a moderate
shift worth a look, above 0.25 a major one (docs/monitoring.md). With ``n`` predictions and
``C`` classes and no drift at all, sampling noise alone gives about ``(C - 1) / n``: 0.045 at the
default 200-prediction minimum with 10 classes, 0.0045 over the full 2,000-prediction window.

The gauge is written once the window holds ``DRIFT_MIN_SAMPLES`` predictions, then at most every
:data:`UPDATE_INTERVAL_S` (the sum is over every class: cheap for 10, not for 1,000, per batch).
Until then this worker writes no value at all, rather than NaN: ``livemax`` aggregates the
workers' values in file order and a NaN read first would hide another worker's real value.
A version without a recorded reference gets counters and the histogram, no gauge.

:class:`DriftSignals` is the runner's one seam: the monitors of the versions it has seen, and
the counts of inputs whose size or mode differs from the training input
(``imgclf_input_mismatch_total{model,reason}``).

A version other than production answering ``?version=`` requests has a monitor and series of
its own; its batches never touch production's gauge. Only production is "current": a hot swap
retires the old production's gauge, and so does the LRU when it unloads a version
(``service.inference.versions``).
"""

import logging
import math
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any

from service import metrics
from service.inference.imaging import Opened, input_mismatches
from service.inference.loading import LoadedModel

log = logging.getLogger(__name__)

EPSILON = 1e-4  # floor of a share in the PSI: an empty class counts as 0.01% of the traffic
UPDATE_INTERVAL_S = 0.5


def psi(live: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index of the ``live`` class shares against ``reference`` (same
    class order; each sums to 1), every share floored at :data:`EPSILON`."""
    total = 0.0
    for p, q in zip(live, reference, strict=True):
        p, q = max(p, EPSILON), max(q, EPSILON)
        total += (p - q) * math.log(p / q)
    return total


def reference_shares(metadata: dict[str, Any], labels: list[str]) -> list[float] | None:
    """The test split's top-1 class shares in label order, from ``prediction_reference``;
    None when the version has none (published before it) or it is malformed."""
    reference = metadata.get("prediction_reference")
    if reference is None:
        return None
    try:
        shares = reference["class_share"]
        values = [float(shares.get(label, 0.0)) for label in labels]
    except (TypeError, KeyError, AttributeError, ValueError):
        log.warning("%s v%s: prediction_reference is malformed; no drift gauge",
                    metadata.get("name"), metadata.get("version"))
        return None
    total = sum(values)
    if not math.isfinite(total) or total <= 0 or min(values) < 0:
        log.warning("%s v%s: prediction_reference shares do not form a distribution; no drift "
                    "gauge", metadata.get("name"), metadata.get("version"))
        return None
    return [v / total for v in values]


class DriftMonitor:
    """The drift signals of one loaded version in this worker (see the module docstring)."""

    def __init__(self, name: str, version: str, labels: list[str], reference: list[float] | None,
                 *, window: int, min_samples: int) -> None:
        self.reference = reference
        self.window = window
        self.min_samples = min(min_samples, window)
        self._ring = [0] * window  # the last `window` top-1 classes, oldest at _position when full
        self._position = 0
        self._filled = 0
        self._counts = [0] * len(labels)  # of each class in the ring
        self._predictions = [metrics.PREDICTIONS.labels(name, version, label) for label in labels]
        self._confidence = metrics.CONFIDENCE.labels(name, version)
        self._name, self._version = name, version
        # Created at the first write: a labelled gauge exists (as 0) from its creation on.
        self._gauge: Any = None
        self._next_update = 0.0  # monotonic time of the next gauge write
        self.retired = False

    def observe(self, classes: list[int], confidences: list[float]) -> None:
        """One batch's top-1 classes and their probabilities."""
        for index, count in Counter(classes).items():
            self._predictions[index].inc(count)
        for confidence in confidences:
            self._confidence.observe(confidence)
        ring, counts, window = self._ring, self._counts, self.window
        position, filled = self._position, self._filled
        for index in classes[-window:]:
            if filled == window:
                counts[ring[position]] -= 1
            else:
                filled += 1
            ring[position] = index
            counts[index] += 1
            position = position + 1 if position + 1 < window else 0
        self._position, self._filled = position, filled
        if self.reference is not None and not self.retired and filled >= self.min_samples:
            now = time.monotonic()
            if now >= self._next_update:
                self._next_update = now + UPDATE_INTERVAL_S
                if self._gauge is None:
                    self._gauge = metrics.DRIFT_PSI.labels(self._name, self._version)
                self._gauge.set(self.psi())

    def psi(self) -> float:
        """The PSI of the window now; NaN without a reference or before ``min_samples``."""
        if self.reference is None or self._filled < self.min_samples:
            return math.nan
        filled = self._filled
        return psi([count / filled for count in self._counts], self.reference)

    def retire(self) -> None:
        """This version stopped serving here: its gauge reads NaN (an old value would look
        current), if it was ever written."""
        self.retired = True
        if self._gauge is not None:
            self._gauge.set(math.nan)

    def resume(self) -> None:
        """This version serves here (again): its gauge is written at the next batch."""
        self.retired = False
        self._next_update = 0.0


class DriftSignals:
    """The inference thread's drift bookkeeping: a :class:`DriftMonitor` per loaded version and
    the input-mismatch counts.

    A model's current version is its production one (:meth:`serve`, at every install). The
    first batch of the current version retires the gauge of the one before; a batch of any
    other version (``?version=`` requests, or batches still queued for a production swapped
    out) feeds its own monitor and retires nothing, and a retired monitor writes no gauge. Until
    a production version is named (DriftSignals used on its own, as in a benchmark), the version
    of a model's last batch counts as current."""

    def __init__(self, *, window: int, min_samples: int) -> None:
        self.window = window
        self.min_samples = min_samples
        # Keyed by the LoadedModel itself: the entry goes when the version is unloaded for good.
        self._monitors: weakref.WeakKeyDictionary[LoadedModel, DriftMonitor] = \
            weakref.WeakKeyDictionary()
        self._current: dict[str, DriftMonitor] = {}  # per model name
        # Per model name, the production version (a weak reference: the slot owns it).
        self._production: dict[str, weakref.ReferenceType[LoadedModel]] = {}
        self._mismatch: dict[str, tuple] = {}  # (size, mode) counters per model, resolved once

    def inputs(self, loaded: LoadedModel, opened: Opened) -> None:
        """Count a request's images whose header size or mode differs from the model's input."""
        size, mode = input_mismatches(opened, loaded.spec)
        if size or mode:
            counters = self._mismatch.get(loaded.name)
            if counters is None:
                counters = self._mismatch[loaded.name] = (
                    metrics.INPUT_MISMATCH.labels(loaded.name, "size"),
                    metrics.INPUT_MISMATCH.labels(loaded.name, "mode"))
            if size:
                counters[0].inc(size)
            if mode:
                counters[1].inc(mode)

    def serve(self, loaded: LoadedModel, *, replacing: LoadedModel | None = None) -> None:
        """``loaded`` is the production version of its model from now on (called from the event
        loop at each install); the one it replaces is retired."""
        self._production[loaded.name] = weakref.ref(loaded)
        if replacing is not None and replacing is not loaded:
            self.retire(replacing)

    def retire(self, loaded: LoadedModel) -> None:
        """``loaded`` stopped serving here (called from the event loop at the hot swap, or when
        the LRU of ``?version=`` versions unloads it): its gauge reads NaN at once, not only at
        this worker's next batch, which may never come when a load balancer sends the traffic
        elsewhere. Batches still queued for it write no gauge (:meth:`DriftMonitor.observe`)."""
        monitor = self._monitors.get(loaded)
        if monitor is not None:
            monitor.retire()

    def predictions(self, loaded: LoadedModel, scores: list[list[float]],
                    indices: list[list[int]]) -> None:
        """One forward's top-k rows (best first): the top-1 of each image goes to the monitor."""
        monitor = self._monitors.get(loaded)
        if monitor is None:
            monitor = self._monitors[loaded] = DriftMonitor(
                loaded.name, loaded.version, loaded.labels,
                reference_shares(loaded.metadata, loaded.labels),
                window=self.window, min_samples=self.min_samples)
        production = self._production.get(loaded.name)
        current = self._current.get(loaded.name)
        if current is not monitor and (production is None or production() is loaded):
            if current is not None:
                current.retire()
            monitor.resume()
            self._current[loaded.name] = monitor
        monitor.observe([row[0] for row in indices], [row[0] for row in scores])
