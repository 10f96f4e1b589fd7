"""What the inference thread does with a batch: decode what is still encoded, then one forward.

The micro-batcher (``service.inference.batcher``) hands a batch of :class:`Job` to
:class:`BatchRunner` on the worker's single inference thread. Small requests arrive still
encoded and are decoded here, together with their batch, so that the event loop keeps only HTTP
work. The runner reads each job's image headers first: a job announcing more than
``DECODE_INLINE_PIXELS`` pixels (bytes say nothing: a 16 KB PNG can hold 16 million blank
pixels) is answered :class:`Undecoded`, and the predictor decodes it in a thread pool and
queues its pixels, so that big images never hold up the batch of small ones behind them.

What the model saw and answered also feeds the drift signals (``service.inference.drift``):
the images' header sizes and modes, and each forward's top-1 classes and probabilities.
"""

import time
from dataclasses import dataclass

import torch

from artifacts.preprocess import pixels_to_uint8
from service import metrics
from service.errors import InvalidImageError
from service.inference.drift import DriftSignals
from service.inference.imaging import Opened, RawImage, decode_opened, open_images
from service.inference.loading import LoadedModel
from service.schemas import Result
from service.settings import Settings
from service.workers.core_share import CoreShare


@dataclass(frozen=True)
class Job:
    """One request, or a batch-sized chunk of one, as the inference thread receives it: either
    its files, still encoded, or their pixels when they were decoded before queueing."""

    top_k: int
    files: list[RawImage] | None = None
    pixels: list[bytes] | None = None

    @property
    def count(self) -> int:
        return len(self.files if self.files is not None else self.pixels or ())


@dataclass(frozen=True)
class Undecoded:
    """The answer for a job whose headers announce more than ``DECODE_INLINE_PIXELS`` pixels:
    not decoded on the inference thread, where it would delay everyone's batch. Its headers are
    read already; the predictor decodes it in the pool."""

    opened: Opened


class BatchRunner:
    """``runner(loaded, jobs)`` on the inference thread: per job, its top-k rows, the
    ``InvalidImageError`` of its bad images (a bad image fails its own request only), or
    :class:`Undecoded` for a job with too many pixels to decode here."""

    def __init__(self, settings: Settings, cores: CoreShare) -> None:
        self.max_pixels = settings.max_pixels
        self.decode_inline_pixels = settings.decode_inline_pixels
        self.cores = cores
        self.drift = DriftSignals(window=settings.drift_window,
                                  min_samples=settings.drift_min_samples)
        self._metrics: dict[str, tuple] = {}  # labelled children per model, resolved once

    def __call__(self, loaded: LoadedModel,
                 jobs: list[Job]) -> list[Result | InvalidImageError | Undecoded]:
        decode_times: list[float] = []
        pixels = [self._pixels(loaded, job, decode_times) for job in jobs]
        decode_time, forward_time, batch_size, images = self._children(loaded.name)
        for seconds in decode_times:
            decode_time.observe(seconds)
        good = [(job, chunk) for job, chunk in zip(jobs, pixels, strict=True)
                if isinstance(chunk, list)]
        if not good:
            return pixels  # type: ignore[return-value] - none of them to classify
        started = time.perf_counter()
        self.cores.set_threads_for_forward()
        metrics.FORWARDS.labels(loaded.name, str(torch.get_num_threads())).inc()  # torch's own
        with torch.inference_mode():
            batch = pixels_to_uint8([p for _, chunk in good for p in chunk], spec=loaded.spec)
            k = max(job.top_k for job, _ in good)
            scores, indices = loaded.probabilities(batch).topk(k, dim=1)  # (N, k) each
            all_scores, all_indices = scores.tolist(), indices.tolist()
        forward_time.observe(time.perf_counter() - started)
        batch_size.observe(len(all_scores))
        images.inc(len(all_scores))
        self.drift.predictions(loaded, all_scores, all_indices)
        results: list[Result | InvalidImageError | Undecoded] = []
        offset = 0
        for chunk in pixels:
            if not isinstance(chunk, list):
                results.append(chunk)
                continue
            end = offset + len(chunk)
            results.append((all_scores[offset:end], all_indices[offset:end]))
            offset = end
        return results

    def _pixels(self, loaded: LoadedModel, job: Job,
                decode_times: list[float]) -> list[bytes] | InvalidImageError | Undecoded:
        """The job's pixels: decoded before queueing, or now (its time appended to
        ``decode_times``); else why not."""
        if job.pixels is not None:
            return job.pixels
        started = time.perf_counter()
        opened = open_images(job.files or [], max_pixels=self.max_pixels)
        self.drift.inputs(loaded, opened)
        if opened.pixels > self.decode_inline_pixels:
            return Undecoded(opened)
        try:
            return decode_opened(opened, spec=loaded.spec)
        except InvalidImageError as exc:
            return exc
        finally:
            decode_times.append(time.perf_counter() - started)

    def decode_time(self, name: str) -> metrics.Histogram:
        """The decode-time histogram of model ``name`` (also observed by the decode pool)."""
        return self._children(name)[0]

    def _children(self, name: str) -> tuple:
        children = self._metrics.get(name)
        if children is None:
            children = self._metrics[name] = (
                metrics.DECODE_TIME.labels(name), metrics.INFERENCE_TIME.labels(name),
                metrics.BATCH_SIZE.labels(name), metrics.IMAGES.labels(name))
        return children
