"""Hot reload and the admin operations (reload, promote, rollback) of one worker.

Each worker polls ``registry/<model>/production`` (one small file read) every
``RELOAD_INTERVAL_S``. A new version is loaded and validated on the loader thread while the
old one keeps serving, then swapped in (:meth:`Predictor.install`). A version that fails
validation is refused, logged, counted (``imgclf_model_reloads_total{outcome="refused"}``) and
not retried by the poller (versions are immutable); the old one keeps serving. Promote and
rollback rewrite the pointer through ``artifacts.registry`` and load at once in this worker;
the other workers follow at their next poll.

Hot reload loads the way ``?version=`` requests do (``Predictor.load``, through the slot's
:class:`~service.inference.versions.RetainedVersions`): a version that requests loaded becomes
production without a second load, and requests and the poller never load one version twice
at once. Refusals are shared too: a version refused for a request is not retried by the poller.
"""

import asyncio
import errno
import logging

from artifacts import registry
from artifacts.production import switch_production
from artifacts.registry import ArtifactValidationError, RegistryError
from service import metrics
from service.errors import (
    ArtifactRejectedError,
    BadRequestError,
    ConflictError,
    RegistryReadOnlyError,
    UnknownModelError,
    public_text,
)
from service.inference.loading import LoadedModel
from service.inference.predictor import ModelSlot, Predictor
from service.inference.versions import LOAD_ERRORS
from service.schemas import AdminResponse

log = logging.getLogger(__name__)
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


class Reloader:
    """Keeps each slot of a predictor on its production version."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.settings = predictor.settings
        self._task: asyncio.Task | None = None
        self._first_round = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll_forever(), name="reloader")

    async def wait_first_round(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every slot had its first load attempt.

        Called from the app's startup: uvicorn only accepts connections after startup, so a
        worker that gunicorn starts (or restarts after a crash) under load takes no request
        before it can serve one, while a worker with nothing to load starts at once.
        """
        if timeout > 0:
            try:
                await asyncio.wait_for(self._first_round.wait(), timeout)
            except TimeoutError:
                log.warning("no model loaded within %.0f s of starting; serving anyway "
                            "(/health/ready says 503 until it is)", timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _poll_forever(self) -> None:
        interval = self.settings.reload_interval_s
        waiting_logged: set[str] = set()
        while True:
            for slot in self.predictor.slots.values():
                try:
                    production = await self.refresh(slot, explicit=False)
                except Exception:  # never let one bad poll end hot reload for good
                    log.exception("polling %s failed", slot.name)
                    continue
                if production is None and slot.problem is None and slot.name not in waiting_logged:
                    log.info("%s has no production version yet; polling", slot.name)
                    waiting_logged.add(slot.name)
            self._first_round.set()
            all_loaded = all(s.current is not None for s in self.predictor.slots.values())
            if interval <= 0 and all_loaded:
                return  # polling disabled: it only ran to get the first versions in
            await asyncio.sleep(interval if interval > 0 else 2.0)

    async def _load(self, slot: ModelSlot, version: str) -> LoadedModel:
        """Load + validate ``version`` off the event loop, or take it from the versions requests
        loaded (or are loading); refusals are logged and counted."""
        try:
            return await slot.retained.load(version, keep=False)
        except LOAD_ERRORS as exc:
            raise self._rejected(slot, version, exc) from exc

    def _checked_load(self, slot: ModelSlot, version: str) -> LoadedModel:
        """On the loader thread: load, validate and warm up ``version``, or raise
        :class:`ArtifactRejectedError` after recording why (readiness and metrics show it)."""
        try:
            return self.predictor.load(slot.name, version)
        except LOAD_ERRORS as exc:
            raise self._rejected(slot, version, exc) from exc

    def _rejected(self, slot: ModelSlot, version: str, exc: Exception) -> ArtifactRejectedError:
        """Record why ``version`` could not be loaded; the error to raise."""
        if isinstance(exc, ArtifactValidationError):
            # The version is there and bad; versions are immutable, so never retry it by poll.
            slot.refused[version] = self._public(exc)
            slot.problem = f"version {version} was refused: {self._public(exc)}"
            metrics.RELOADS.labels(slot.name, "refused").inc()
            log.error("refused %s v%s, still serving %s: %s", slot.name, version,
                      f"v{slot.current.version}" if slot.current else "nothing", exc)
        else:
            # Missing files (a half-copied registry, a network mount hiccup), an unknown
            # architecture...: counted and retried at the next poll, logged once per reason.
            metrics.RELOADS.labels(slot.name, "failed").inc()
            self._note_problem(slot, f"cannot load version {version} yet: {self._public(exc)}")
        return ArtifactRejectedError(f"{slot.name} version {version} was refused: {exc}")

    def _public(self, exc: BaseException) -> str:
        """An exception's message for clients and readiness: no paths beyond the registry."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return public_text(reason, self.settings.model_registry)

    def _note_problem(self, slot: ModelSlot, problem: str) -> None:
        """Remember why ``slot`` cannot follow production; logged once per distinct reason."""
        if slot.problem != problem:
            log.warning("%s: %s (still serving %s)", slot.name, problem,
                        f"v{slot.current.version}" if slot.current else "nothing")
        slot.problem = problem

    def _read_pointer(self, slot: ModelSlot, *, explicit: bool) -> str | None:
        """The production version, or None when it cannot be read (the problem is noted:
        an unreadable registry is an operator's problem, never a crash or a log flood)."""
        try:
            return registry.read_production(self.settings.model_registry, slot.name)
        except (RegistryError, OSError, UnicodeDecodeError) as exc:
            metrics.RELOADS.labels(slot.name, "failed").inc()
            self._note_problem(slot, f"cannot read the production pointer: {self._public(exc)}")
            if explicit:
                raise ConflictError(
                    f"cannot read the production pointer of {slot.name}: {self._public(exc)}"
                ) from None
            return None

    async def refresh(self, slot: ModelSlot, *, explicit: bool) -> str | None:
        """Load the production version if it is not the one served; returns the pointer.

        ``explicit`` (admin reload) retries a version the poller refused before and raises
        when it is refused again; the poller stays quiet about a known-bad version.
        """
        async with slot.lock:
            production = self._read_pointer(slot, explicit=explicit)
            if production is None:
                return None
            current = slot.current
            if current is not None and current.version == production:
                slot.problem = None
                return production
            if production in slot.refused and not explicit:
                # Refused here before (perhaps for a ?version= request): readiness says why.
                self._note_problem(slot, f"version {production} was refused: "
                                         f"{slot.refused[production]}")
                return production
            try:
                loaded = await self._load(slot, production)
            except ArtifactRejectedError:
                if explicit:
                    raise
                return production
            self.predictor.install(slot, loaded)
            slot.refused.pop(production, None)
            slot.problem = None
            metrics.RELOADS.labels(slot.name, "loaded").inc()
            return production

    # ------------------------------------------------------------------ admin operations

    async def reload(self, name: str | None) -> AdminResponse:
        slot = self.predictor.slot(name)
        before = slot.current.version if slot.current else None
        production = await self.refresh(slot, explicit=True)
        return self._answer(slot, production, before, "reloaded" if production else
                            "no production version is published yet")

    async def promote(self, name: str | None, version: str) -> AdminResponse:
        slot = self.predictor.slot(name)
        try:
            registry.validate_version(version)
        except RegistryError as exc:
            raise BadRequestError(str(exc)) from None
        published = registry.list_versions(self.settings.model_registry, slot.name)
        if version not in published:
            raise UnknownModelError(
                f"{slot.name} version {version} is not published; published versions: "
                f"{', '.join(published) or 'none'}"
            )
        return await self._switch(slot, version)

    async def rollback(self, name: str | None) -> AdminResponse:
        return await self._switch(self.predictor.slot(name), None)

    async def _switch(self, slot: ModelSlot, version: str | None) -> AdminResponse:
        """:func:`artifacts.production.switch_production` with this worker's load as the check,
        so a version that cannot serve here never becomes production; then serve it here (the
        other workers follow at their next poll)."""
        async with slot.lock:
            before = slot.current.version if slot.current else None
            retained = slot.retained.snapshot()  # a version requests loaded is not loaded twice

            def check(target: str) -> LoadedModel:
                return retained.get(target) or self._checked_load(slot, target)

            try:
                version, loaded = await self.predictor.in_loader_thread(
                    switch_production, self.settings.model_registry, slot.name, version,
                    check=check)
            except OSError as exc:
                if exc.errno in _READ_ONLY_ERRNOS:
                    raise RegistryReadOnlyError(
                        f"the registry {self.settings.model_registry} is read-only for this "
                        f"service ({exc.strerror}); promote from the training side instead"
                    ) from None
                raise ConflictError(f"could not change the production pointer: "
                                    f"{self._public(exc)}") from None
            except RegistryError as exc:
                raise ConflictError(self._public(exc)) from None
            self.predictor.install(slot, loaded)
            slot.refused.pop(version, None)
            slot.problem = None
            metrics.RELOADS.labels(slot.name, "loaded").inc()
        production = self._read_pointer(slot, explicit=False)
        return self._answer(slot, production, before, f"production is now version {version}")

    def _answer(self, slot: ModelSlot, production: str | None, before: str | None,
                detail: str) -> AdminResponse:
        loaded = slot.current.version if slot.current else None
        return AdminResponse(model=slot.name, production=production, loaded=loaded,
                             changed=loaded != before, detail=detail)
