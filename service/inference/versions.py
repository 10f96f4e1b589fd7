"""The versions of one model a worker holds besides production, for ``?version=`` requests.

``/predict?model=NAME&version=V`` (and the v2 version paths) may name any version still
published in the registry. :class:`RetainedVersions` resolves such a version of one model:

- a string that is no version is a 400; a version refused before is a 422 ``version_refused``
  at once (versions are immutable: remembered until the worker restarts or an admin promotes
  it successfully); one that is not published (never, or pruned since) is a 404 listing the
  available ones. The listing is read from the registry in a thread, at most every
  :data:`LISTING_TTL_S`, and again at once for a version it does not hold (just published?);
- it is loaded on first use by the load every hot swap runs (``Predictor.load``: sha256, golden
  set on the serving device and precision, warm-up) on the worker's loader thread, so the
  inference thread keeps running other requests' batches and the event loop stays free.
  Concurrent requests for one version share that one load;
- it stays loaded in a least-recently-used set of ``MAX_LOADED_VERSIONS``: the least recently
  used one is unloaded when another comes in (its drift gauge retired), and one pruned from the
  registry is unloaded at the next listing.

Production is not in the set: it is ``ModelSlot.current``, always loaded, never evicted. Hot
reload loads through :meth:`RetainedVersions.load` too, so a version is never loaded twice at
once: the reloader takes a version that requests loaded, a request for the version the reloader
is loading waits for that load, and :meth:`RetainedVersions.promoted` takes the new production
out of the set.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from artifacts.registry import ArtifactValidationError, RegistryError, list_versions, validate_version
from service import metrics
from service.errors import (
    BadRequestError,
    ModelNotReadyError,
    UnknownVersionError,
    VersionRefusedError,
    public_text,
)
from service.inference.loading import LoadedModel

log = logging.getLogger(__name__)

LISTING_TTL_S = 1.0  # how stale the registry listing may be: a pruned version serves that long
# What a load raises: ArtifactValidationError (a RegistryError) when the version is refused,
# remembered; else missing files, a registry hiccup, an architecture this code does not know,
# not remembered (the next request or poll tries again).
LOAD_ERRORS = (RegistryError, OSError, ValueError, RuntimeError)


class RetainedVersions:
    """One model's non-production versions loaded in this worker (see the module docstring).

    ``load(version)`` is a coroutine that loads and checks a version (on the loader thread);
    ``unload(loaded)`` is told of each version dropped from the set (the drift gauge retires).
    Event loop only.
    """

    def __init__(self, name: str, *, capacity: int, registry: Path,
                 load: Callable[[str], Awaitable[LoadedModel]],
                 unload: Callable[[LoadedModel], None]) -> None:
        self.name = name
        self.capacity = capacity
        self.refused: dict[str, str] = {}  # version -> why (hot reload's refusals too)
        self.production: str | None = None  # never kept here while it is production
        self._registry = registry
        self._load = load
        self._unload = unload
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._published: list[str] = []
        self._listed_at = -float("inf")
        self._listing: asyncio.Task[None] | None = None
        self._evictions = metrics.VERSION_EVICTIONS.labels(name)

    def versions(self) -> list[str]:
        """The versions loaded here besides production, most recently used first."""
        return list(reversed(self._loaded))

    def snapshot(self) -> dict[str, LoadedModel]:
        """The loaded versions now, as a plain dict another thread may read."""
        return dict(self._loaded)

    async def resolve(self, version: str) -> LoadedModel:
        """``version`` loaded (not production: the predictor answers that one), or the error
        that tells the client why not: 400, 404 listing the available versions, 422 refused,
        503 cannot be loaded now."""
        try:
            validate_version(version)
        except RegistryError as exc:
            raise BadRequestError(str(exc)) from None
        if version in self.refused:
            raise VersionRefusedError(f"{self.name} version {version} was refused when it was "
                                      f"loaded: {self.refused[version]}")
        available = await self.available()
        if version not in available:
            available = await self.available(fresh=True)  # published since the last listing?
            if version not in available:
                raise UnknownVersionError(
                    f"model {self.name!r} has no version {version} (never published, or pruned); "
                    f"available versions: {', '.join(available) or 'none'}",
                    available_versions=available)
        loaded = self._loaded.get(version)
        if loaded is not None:
            self._loaded.move_to_end(version)
            return loaded
        try:
            return await self.load(version, keep=True)
        except ArtifactValidationError as exc:
            raise VersionRefusedError(f"{self.name} version {version} was refused: {exc}") from None
        except LOAD_ERRORS as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ModelNotReadyError(f"{self.name} version {version} cannot be loaded now: "
                                     f"{reason}; retry shortly") from None

    async def load(self, version: str, *, keep: bool) -> LoadedModel:
        """``version`` from the set, else loaded once however many ask at the same time: the
        caller that starts the load says whether the set ``keep``s it (a request: yes; hot
        reload, which installs it as production: no). Raises what the load raised; a refusal
        (``ArtifactValidationError``) is remembered."""
        loaded = self._loaded.get(version)
        if loaded is not None:
            return loaded
        task = self._loading.get(version)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._load_once(version, keep), name=f"load {self.name} v{version}")
            task.add_done_callback(_retrieve)
            self._loading[version] = task
        # A client that goes away cancels its own wait, not the load the others share.
        return await asyncio.shield(task)

    async def _load_once(self, version: str, keep: bool) -> LoadedModel:
        try:
            loaded = await self._load(version)
        except ArtifactValidationError as exc:
            self.refused[version] = public_text(str(exc), self._registry)
            raise
        finally:
            del self._loading[version]
        if keep:
            self._keep(loaded)
        return loaded

    def _keep(self, loaded: LoadedModel) -> None:
        """Add ``loaded`` as the most recently used; unload the least recently used beyond
        the capacity."""
        if loaded.version == self.production:
            return
        self._loaded[loaded.version] = loaded
        self._loaded.move_to_end(loaded.version)
        while len(self._loaded) > self.capacity:
            version, evicted = self._loaded.popitem(last=False)
            self._evictions.inc()
            self._unload(evicted)
            log.info("unloaded %s v%s, the least recently used of MAX_LOADED_VERSIONS=%d",
                     self.name, version, self.capacity)

    def promoted(self, loaded: LoadedModel) -> None:
        """``loaded`` is production now: out of the set (the same object serves on as
        production; another copy of its version is unloaded) and never kept in it meanwhile."""
        self.production = loaded.version
        held = self._loaded.pop(loaded.version, None)
        if held is not None and held is not loaded:
            self._unload(held)

    async def available(self, *, fresh: bool = False) -> list[str]:
        """The published versions not refused here, oldest first: listed from the registry in
        a thread when the last listing is older than :data:`LISTING_TTL_S` (or ``fresh``);
        concurrent callers share one listing. 503 when the registry cannot be read."""
        if fresh or time.monotonic() - self._listed_at > LISTING_TTL_S:
            if self._listing is None:
                self._listing = asyncio.get_running_loop().create_task(self._list())
                self._listing.add_done_callback(_retrieve)
            await asyncio.shield(self._listing)
        return [version for version in self._published if version not in self.refused]

    async def _list(self) -> None:
        try:
            published = await asyncio.to_thread(list_versions, self._registry, self.name)
        except OSError as exc:
            raise ModelNotReadyError(f"cannot list the versions of {self.name}: "
                                     f"{exc.strerror or exc}; retry shortly") from None
        finally:
            self._listing = None
        self._published, self._listed_at = published, time.monotonic()
        for version in [v for v in self._loaded if v not in published]:
            self._unload(self._loaded.pop(version))
            log.info("unloaded %s v%s: pruned from the registry", self.name, version)


def _retrieve(task: asyncio.Task) -> None:
    """Read a shared task's exception, so that one whose waiters all went away is not logged
    as never retrieved (each waiter got, or will get, it raised)."""
    if not task.cancelled():
        task.exception()
