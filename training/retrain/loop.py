"""``python -m training schedule [--once]``: the retraining job.

Each run trains a candidate with the configured recipe (``training.train.main``, in process),
publishes it as a new immutable version, scores the production model on the candidate's own
held-out test split (``training.retrain.compare``), and moves the production pointer only when
the candidate is at least as good (plus a margin) and reaches a floor. The running service
notices the pointer change and hot-reloads. Then old versions are pruned (never production or
the previous production version, the rollback target).

Whatever happens, production is only ever changed by the one atomic pointer rewrite at the end,
so a crash, bad data or a worse model leaves it as it was. Every run writes a JSON report to
``<registry>/<name>/reports/`` and one summary log line. Runs never overlap
(:class:`~training.retrain.lock.RunLock`).

Exit codes of ``--once`` (for cron and Kubernetes CronJobs, where non-zero means "look at me"):

==  ==================================================================================
0   the run completed: the candidate was promoted, or production was kept because the
    candidate was not better (a correct outcome, not a failure: retrying would not help)
1   the run failed (exception: bad data, training crash, registry error); production untouched
2   invalid settings (the message names the variable)
3   no production model exists and the candidate did not reach SCHEDULE_MIN_ACCURACY:
    nothing can be served, someone must look at the data or the recipe
75  skipped: another run holds the lock (EX_TEMPFAIL; try again later)
143 interrupted by SIGTERM/SIGINT during a run; production untouched
==  ==================================================================================
"""

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from pydantic import ValidationError

from artifacts import registry
from training.retrain.lock import LockBusyError, RunLock
from training.retrain.run import Interrupted, RetrainRun, RunOutcome
from training.retrain.settings import ScheduleSettings, cron_ticks, load_recipe

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_NO_MODEL, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 75, 143


class Scheduler:
    """Runs :class:`RetrainRun` once or on an interval/cron schedule, one run at a time."""

    def __init__(self, settings: ScheduleSettings, recipe: dict) -> None:
        self.settings = settings
        self.recipe = recipe
        self.name = registry.validate_name(settings.name or recipe["dataset"])
        self.lock_path = (settings.lock_file
                          or registry.model_dir(settings.registry, self.name) / ".schedule.lock")
        self._stop = threading.Event()
        self._running = False
        self._critical = False

    # ------------------------------------------------------------------ one run
    def run_once(self) -> int:
        """One locked run; returns its exit code (see the module docstring)."""
        try:
            with RunLock(self.lock_path) as lock:
                self._running = True
                try:
                    run = RetrainRun(self.settings, self.recipe, self.name,
                                     critical=self._critical_section, stopping=self._stop.is_set)
                    outcome = run.execute(stale_lock=lock.stale)
                except Interrupted:
                    log.warning("retrain %s: interrupted; production untouched", self.name)
                    return EXIT_INTERRUPTED
                finally:
                    self._running = False
        except LockBusyError as exc:
            log.warning("retrain %s: skipped: %s", self.name, exc)
            return EXIT_BUSY
        return _exit_code(outcome)

    def _critical_section(self, entering: bool) -> None:
        """Between the decision and the pointer write a signal must not cut in; it is deferred."""
        self._critical = entering

    # ------------------------------------------------------------------ the loop
    def next_run(self, *, last_start: datetime | None, now: datetime) -> datetime:
        """The next start time: the next cron tick after ``now``, or ``last_start`` plus the
        interval (fixed rate; a run that overran its interval is followed at once, once)."""
        if self.settings.cron:
            tick = next(cron_ticks(self.settings.cron, now.astimezone(self.settings.tz)))
            return tick.astimezone(timezone.utc)
        if last_start is None:
            return now + timedelta(seconds=self.settings.interval_seconds)
        return max(now, last_start + timedelta(seconds=self.settings.interval_seconds))

    def _run_on_start(self) -> bool:
        policy = self.settings.run_on_start
        if policy == "if-no-production":
            return registry.read_production(self.settings.registry, self.name) is None
        return policy == "always"

    def loop(self) -> int:
        """Run forever (until SIGTERM/SIGINT); failed runs are reported and the loop goes on."""
        when = f"cron {self.settings.cron!r} ({self.settings.timezone})" if self.settings.cron \
            else f"every {self.settings.interval_seconds:g} s"
        log.info("retraining %s %s; registry %s", self.name, when, self.settings.registry)
        last_start = None
        if self._run_on_start():
            last_start = _utcnow()
            if self.run_once() == EXIT_INTERRUPTED:
                return EXIT_OK
        while not self._stop.is_set():
            next_at = self.next_run(last_start=last_start, now=_utcnow())
            log.info("next retraining run of %s at %s", self.name,
                     next_at.isoformat(timespec="seconds"))
            while not self._stop.is_set() and (wait := (next_at - _utcnow()).total_seconds()) > 0:
                self._stop.wait(timeout=min(wait, 60.0))  # re-check: the wall clock may jump
            if self._stop.is_set():
                break
            last_start = _utcnow()
            if self.run_once() == EXIT_INTERRUPTED:
                break
        log.info("retraining job stopped")
        return EXIT_OK

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop the loop; during a run they raise :class:`Interrupted` (except in
        the pointer write, where they are deferred). The previous handlers are restored after."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return

        def handle(signum: int, _frame) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self._stop.set()
            if self._running and not self._critical:
                raise Interrupted(signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask the loop to end after the current run (or at once while it waits)."""
        self._stop.set()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _exit_code(outcome: RunOutcome) -> int:
    codes = {"promoted": EXIT_OK, "kept": EXIT_OK, "skipped": EXIT_OK, "rejected": EXIT_NO_MODEL}
    return codes.get(outcome.status, EXIT_FAILED)


def run_schedule(once: bool, force: bool = False) -> int:
    """Entry point of ``python -m training schedule``: settings from the environment
    (``force``: as ``SCHEDULE_FORCE=true``, train even on unchanged data)."""
    try:
        settings = ScheduleSettings(**({"force": True} if force else {}))
        recipe = load_recipe()
        scheduler = Scheduler(settings, recipe)
    except (ValidationError, ValueError) as exc:
        log.error("invalid retraining settings: %s", exc)
        return EXIT_CONFIG
    with scheduler.signals():
        if not once:
            return scheduler.loop()
        started = time.perf_counter()
        code = scheduler.run_once()
        log.info("retraining run finished with exit code %d in %.1f s", code,
                 time.perf_counter() - started)
        return code

