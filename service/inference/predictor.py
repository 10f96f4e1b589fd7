"""The predictor owns the models of a worker and the flow of one ``/predict`` request::

    admit        model name, readiness, top_k, queue capacity: refused before the body is read
    parse        receive the body within the worker's budget, split it into image files
    queue        the micro-batcher (``service.inference.batcher``) groups concurrent requests
    decode + forward  on the inference thread, one batch at a time (``service.inference.runner``)
    encode       the JSON answer, on the event loop

Requests are decoded on the inference thread together with their batch, so the event loop
keeps only HTTP work: health checks, metrics and refusals answer promptly however busy the
model is. A request whose image headers announce more than ``DECODE_INLINE_PIXELS`` pixels comes
back :class:`~service.inference.runner.Undecoded`; it is decoded in a thread pool here and
queues again as pixels, like requests of more than ``MAX_BATCH_SIZE`` images, which go to the
pool directly.

Each served model name has a :class:`ModelSlot` holding the version being served; hot reload
(``service.inference.reloader``) swaps ``slot.current`` atomically, and requests that already
queued for the old version finish on it, because the batcher groups by version. A request may
name another published version (``?version=``): :meth:`Predictor.version` resolves it through
the slot's :class:`~service.inference.versions.RetainedVersions`, loaded on first use on the
loader thread and kept in a small per-worker LRU; its batches never mix with another version's.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from artifacts.devices import resolve_device
from artifacts.registry import RegistryError, validate_name
from service import metrics
from service.errors import BadRequestError, InvalidModelNameError, ModelNotReadyError, UnknownModelError
from service.inference.batcher import MicroBatcher
from service.inference.imaging import RawImage, decode_opened, install_pixel_limit, open_images
from service.inference.loading import LoadedModel, load_model
from service.inference.runner import BatchRunner, Job, Undecoded
from service.inference.versions import RetainedVersions
from service.schemas import Result, predict_response_json
from service.settings import Settings
from service.workers.core_share import CoreShare

log = logging.getLogger(__name__)


class ImageRequest(Protocol):
    """What the predictor needs of a ``/predict`` request: its parsed head, and a way to receive
    its images (``service.api.parsing.PredictRequest``, which bounds the bytes a worker holds)."""

    top_k: int
    model: str | None
    version: str | None

    async def read_images(self, *, max_images: int) -> list[RawImage]: ...

    def release(self) -> None: ...


@dataclass(eq=False)
class ModelSlot:
    """A served model name: its production version, the other versions loaded for
    ``?version=`` requests, and the batcher feeding them."""

    name: str
    batcher: MicroBatcher[LoadedModel]
    retained: RetainedVersions
    current: LoadedModel | None = None
    # Why this slot cannot follow the production pointer now (readiness shows it; logged once).
    problem: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def refused(self) -> dict[str, str]:
        """Version -> why it was refused, by hot reload or a request (never retried by either)."""
        return self.retained.refused


class Predictor:
    """Per-worker owner of the models: load (via the reloader), decode, predict, encode."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        if settings.precision == "fp16" and self.device.type != "cuda":
            raise RuntimeError("PRECISION=fp16 needs CUDA; use bf16 or fp32 on CPU")
        self.slots: dict[str, ModelSlot] = {}
        self._inference_pool: ThreadPoolExecutor | None = None
        self._decode_pool: ThreadPoolExecutor | None = None
        self._loader_pool: ThreadPoolExecutor | None = None
        threads = settings.resolved_torch_threads
        # gunicorn builds the app after its post_fork hook gave this worker its place in the
        # worker table: a forward on the CPU may borrow idle workers' cores from then on.
        self.cores = (CoreShare.of_this_worker(shared_threads=threads,
                                               alone_threads=settings.torch_threads_alone)
                      if self.device.type == "cpu"
                      else CoreShare(None, None, shared_threads=threads, alone_threads=threads))
        self.runner = BatchRunner(settings, self.cores)

    async def start(self) -> None:
        """Create the threads and batchers of this worker (models load in the background)."""
        threads = self.settings.resolved_torch_threads
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process (a second app in tests)
            pass
        install_pixel_limit(self.settings.max_pixels)
        # One inference thread: forwards run one at a time, each using `threads` cores.
        self._inference_pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._decode_pool = ThreadPoolExecutor(2, thread_name_prefix="decode")
        self._loader_pool = ThreadPoolExecutor(1, thread_name_prefix="loader")
        for name in self.settings.model_names:
            batcher = MicroBatcher(
                self.runner,
                name=name,
                max_batch=self.settings.max_batch_size,
                max_wait_s=self.settings.max_batch_wait_ms / 1000.0,
                max_queue=self.settings.max_queue,
                max_queue_wait_s=self.settings.max_queue_wait_ms / 1000.0,
                executor=self._inference_pool,
            )
            batcher.start()
            retained = RetainedVersions(
                name, capacity=self.settings.max_loaded_versions,
                registry=self.settings.model_registry,
                load=functools.partial(self.in_loader_thread, self.load, name),
                unload=self.runner.drift.retire)
            self.slots[name] = ModelSlot(name=name, batcher=batcher, retained=retained)
            metrics.MODEL_VERSION.labels(name).set(0)
        log.info(
            "predictor started: models %s on %s, precision %s, %d torch thread(s) (%d while the "
            "other workers are idle), max batch %d, wait %.1f ms", self.settings.model_names,
            self.device, self.settings.precision, threads, self.cores.alone_threads,
            self.settings.max_batch_size,
            self.settings.max_batch_wait_ms,
        )

    async def stop(self) -> None:
        for slot in self.slots.values():
            await slot.batcher.stop()
        for pool in (self._inference_pool, self._decode_pool, self._loader_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def in_loader_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run blocking registry/model work off the event loop, one job at a time."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._loader_pool, lambda: fn(*args, **kwargs))

    def load(self, name: str, version: str) -> LoadedModel:
        """On the loader thread: ``version`` of ``name`` verified, checked against its golden set
        on this worker's device and precision, and warmed up (``service.inference.loading``).
        The one load behind hot swaps, admin switches and ``?version=`` requests alike."""
        with self.cores.request():  # its warm-up forwards use this worker's cores
            return load_model(self.settings.model_registry, name, version, device=self.device,
                              precision=self.settings.precision,
                              warmup_batch=self.settings.max_batch_size)

    # ------------------------------------------------------------------ model lookup

    def slot(self, name: str | None) -> ModelSlot:
        """The slot of ``name`` (the default model when None); 400/404 for a bad name."""
        if name is None:
            name = self.settings.default_model
        try:
            validate_name(name)
        except RegistryError as exc:
            raise InvalidModelNameError(str(exc)) from None
        try:
            return self.slots[name]
        except KeyError:
            raise UnknownModelError(
                f"model {name!r} is not served here; served models: {', '.join(self.slots)}"
            ) from None

    def loaded(self, slot: ModelSlot) -> LoadedModel:
        if slot.current is None:
            raise ModelNotReadyError(
                f"model {slot.name!r} is not loaded yet (no production version published, or "
                "still loading); retry shortly"
            )
        return slot.current

    async def available_versions(self, slot: ModelSlot) -> list[str]:
        """The versions of ``slot``'s model a request may name: published, not refused here
        (the registry is listed in a thread, at most every ``LISTING_TTL_S``)."""
        return await slot.retained.available()

    def loaded_versions(self, slot: ModelSlot) -> list[str]:
        """The versions of ``slot``'s model loaded here: production first, then the others,
        most recently used first."""
        production = [slot.current.version] if slot.current is not None else []
        return production + slot.retained.versions()

    def serving(self) -> bool:
        """Every configured model is loaded: what ``/health/ready`` says 200 to."""
        return all(slot.current is not None for slot in self.slots.values()) and bool(self.slots)

    def install(self, slot: ModelSlot, loaded: LoadedModel) -> None:
        """Serve ``loaded`` from now on; a single reference swap, so requests never see a mix."""
        previous = slot.current
        slot.current = loaded
        slot.retained.promoted(loaded)  # taken out of the LRU if requests had loaded it
        metrics.MODEL_VERSION.labels(slot.name).set(int(loaded.version))
        self.runner.drift.serve(loaded, replacing=previous)
        log.info(
            "now serving %s v%s (was %s)", slot.name, loaded.version,
            f"v{previous.version}" if previous else "nothing",
        )

    def refusal(self) -> str | None:
        """Why the default model's queue takes no more work now (counted as a refusal), else
        None: asked by :class:`~service.api.shedding.ShedWhenOverloaded` before routing."""
        slot = self.slots.get(self.settings.default_model)
        return slot.batcher.refuse_now() if slot is not None else None

    # ------------------------------------------------------------------ the request path

    async def predict(self, request: ImageRequest) -> bytes:
        """Classify the images of ``request``; the JSON body of a ``PredictResponse``. All or
        none: one bad image refuses the request."""
        slot, loaded = await self.admit(request.model, request.version, request.top_k)
        try:
            # Inside incoming(), a batch being formed knows this request is on its way and
            # may wait MAX_BATCH_WAIT_MS for it.
            with slot.batcher.incoming():
                files = await request.read_images(max_images=self.settings.max_images)
            results = await self.classify(slot, loaded, files, request.top_k)
        finally:  # the body stays counted until the request is answered
            request.release()
        return predict_response_json(loaded, results, request.top_k)

    async def admit(self, model: str | None, version: str | None,
                    top_k: int) -> tuple[ModelSlot, LoadedModel]:
        """The slot and version that will answer (production when ``version`` is None), or
        the 4xx/503 that refuses the request before its body is read."""
        slot = self.slot(model)
        loaded = await self.version(slot, version)
        if top_k > len(loaded.labels):
            raise BadRequestError(f"top_k={top_k} but model {slot.name!r} has only "
                                  f"{len(loaded.labels)} classes")
        slot.batcher.check_capacity()
        return slot, loaded

    async def version(self, slot: ModelSlot, version: str | None) -> LoadedModel:
        """``version`` of ``slot``'s model, loaded: production when None or equal, else a
        published version, loaded on first use (it may wait for that load, never for another
        request's batch); 400, 404 listing the available versions, 422 refused, 503."""
        current = self.loaded(slot)
        if version is None or version == current.version:
            return current
        return await slot.retained.resolve(version)

    async def classify(self, slot: ModelSlot, loaded: LoadedModel, files: list[RawImage],
                       top_k: int) -> list[Result]:
        """Queue the files, decoded with their batch on the inference thread; a request of
        more than ``MAX_BATCH_SIZE`` images, or one the runner left :class:`Undecoded`, is
        decoded in the pool and queued again as pixels, in batch-sized chunks."""
        limit = self.settings.max_batch_size
        admitted = False  # queued once already: not refused a second time
        if len(files) <= limit:
            outcome = await slot.batcher.submit(loaded, Job(top_k, files=files), len(files))
            if not isinstance(outcome, Undecoded):
                return [outcome]
            opened, admitted = outcome.opened, True
        started = time.perf_counter()
        if not admitted:
            opened = await self._in_decode_pool(open_images, files,
                                                max_pixels=self.settings.max_pixels)
            self.runner.drift.inputs(loaded, opened)  # the runner counts the ones it opens
        pixels = await self._in_decode_pool(decode_opened, opened, spec=loaded.spec)
        self.runner.decode_time(slot.name).observe(time.perf_counter() - started)
        return await self.classify_pixels(slot, loaded, pixels, top_k, admitted=admitted)

    async def classify_pixels(self, slot: ModelSlot, loaded: LoadedModel, pixels: list[bytes],
                              top_k: int, *, admitted: bool = False) -> list[Result]:
        """Queue images already decoded to ``loaded.spec``'s uint8 layout (one ``bytes`` of
        ``C*H*W`` per image), in batch-sized chunks; ``admitted``: queued once already, so
        not refused a second time."""
        limit = self.settings.max_batch_size
        jobs = [Job(top_k, pixels=pixels[start:start + limit])
                for start in range(0, len(pixels), limit)]
        return await slot.batcher.submit_all(
            loaded, [(job, job.count) for job in jobs], admitted=admitted)

    async def _in_decode_pool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._decode_pool, functools.partial(fn, *args, **kwargs))
