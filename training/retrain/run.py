"""One retraining run: train a candidate, compare, promote or keep, prune, report.

Production changes only through the single atomic ``production.promote`` near the end; every
step before it can fail (or be killed) without touching what the service serves.
"""

import json
import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from artifacts import production, registry
from artifacts.storage import atomic_write_bytes
from training import train as train_module
from training.config import TrainConfig
from training.data.splits import DataSplits, load_data
from training.report.metrics import class_recalls
from training.retrain.compare import METRIC, ProductionScore, decide, decide_classes, score_production
from training.retrain.freshness import describe_data, last_kept_out
from training.retrain.lock import LockInfo
from training.retrain.settings import ScheduleSettings

log = logging.getLogger("training.retrain.loop")

RUN_PREFIX = "retrain"


class Interrupted(BaseException):
    """Raised inside a run by SIGTERM/SIGINT. A BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` in the training code can swallow it."""


@dataclass
class RunOutcome:
    """``status``: promoted | kept (production stays, candidate not better) | rejected (no
    production and the candidate missed the floor) | skipped (the data and the recipe equal
    production's) | failed | interrupted."""

    status: str
    report: dict[str, Any]
    report_path: Path | None


class RetrainRun:
    """A single run; :meth:`execute` never raises except :class:`Interrupted`."""

    def __init__(self, settings: ScheduleSettings, recipe: dict[str, Any], name: str, *,
                 critical: Callable[[bool], None] = lambda entering: None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.settings = settings
        self.recipe = recipe
        self.name = name
        self.registry = Path(settings.registry)
        self._critical = critical
        self._stopping = stopping
        started = datetime.now(timezone.utc)
        self.run_id = started.strftime("%Y%m%dT%H%M%S%fZ")
        self.report: dict[str, Any] = {
            "run_id": self.run_id, "model": name, "registry": str(self.registry),
            "started_at": started.isoformat(timespec="seconds"), "finished_at": None,
            "host": socket.gethostname(), "pid": os.getpid(),
            "status": None, "decision": None, "reason": None,
            "policy": {"metric": METRIC, "promotion_margin": settings.promotion_margin,
                       "min_accuracy": settings.min_accuracy,
                       "reevaluate_production": settings.reevaluate_production,
                       "warm_start": settings.warm_start, "max_class_drop": settings.max_class_drop,
                       "force": settings.force},
            "data": None, "gate": None,
            "candidate": None, "production": None, "durations": {}, "pruned_versions": [],
            "pruned_runs": [], "stale_lock": None, "error": None, "recipe": recipe,
        }

    # ------------------------------------------------------------------ driver
    def execute(self, *, stale_lock: LockInfo | None = None) -> RunOutcome:
        report = self.report
        report["stale_lock"] = asdict(stale_lock) if stale_lock else None
        started = time.perf_counter()
        try:
            try:
                self._run()
            except Exception as exc:
                # A signal that lands inside C++ code (torch.save's writer, say) comes back
                # re-wrapped as a RuntimeError: a stop that was asked for is still a stop.
                if self._stopping():
                    raise Interrupted(f"a signal ({type(exc).__name__} while stopping)") from exc
                raise
        except Interrupted as exc:
            report["interrupted"] = str(exc) or "signal"
            if report["status"] is None:
                report.update(status="interrupted", decision="keep",
                              reason=f"interrupted by {exc or 'a signal'} before a decision")
            raise
        except Exception as exc:  # any failure: production untouched, say why
            log.exception("retrain %s: run %s failed", self.name, self.run_id)
            report.update(status="failed", decision="keep", reason=f"{type(exc).__name__}: {exc}",
                          error={"type": type(exc).__name__, "message": str(exc),
                                 "traceback": traceback.format_exc(limit=20)})
        finally:
            report["durations"]["total_s"] = round(time.perf_counter() - started, 3)
            report["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            path = self._write_report()
            self._log_summary(path)
        return RunOutcome(report["status"], report, path)

    def _run(self) -> None:
        s, report = self.settings, self.report
        before = registry.read_production(self.registry, self.name)
        report["production"] = {"version_before": before}
        cfg = self._train_config(None)
        started = time.perf_counter()
        data = load_data(cfg)
        report["durations"]["load_data_s"] = round(time.perf_counter() - started, 3)
        kept_out = last_kept_out(self.reports_dir(), before)
        self.report["data"], unchanged = describe_data(self.registry, self.name, before, cfg, data, kept_out)
        if unchanged and not s.force:
            report.update(status="skipped", decision="keep", reason=unchanged)
            report["production"]["version_after"] = before
            return
        warm_from = self._warm_start_source(before)
        if warm_from:
            cfg = self._train_config(warm_from)

        started = time.perf_counter()
        result = train_module.main(cfg, data=data)
        report["durations"]["train_s"] = round(time.perf_counter() - started, 3)
        candidate_accuracy = float(result.test_metrics[METRIC])
        report["candidate"] = {"version": result.version, "metrics": result.test_metrics,
                               "run_dir": str(result.run_dir), "epochs_run": result.epochs_run,
                               "warm_start_from": warm_from}

        # Production is read again now: it may have been rolled back while we trained.
        current = registry.read_production(self.registry, self.name)
        started = time.perf_counter()
        score, comparable = self._score_production(current, cfg, result.data)
        report["durations"]["evaluate_production_s"] = round(time.perf_counter() - started, 3)
        report["production"].update(version=current, **(score.to_dict() if score else {}))

        if comparable and score is not None and score.test_accuracy is None:
            promote = False
            reason = f"production v{current} cannot be compared ({score.note}); kept"
        else:
            baseline = score.test_accuracy if (comparable and score) else None
            promote, reason = decide(candidate_accuracy, baseline, margin=s.promotion_margin,
                                     floor=s.min_accuracy)
        if comparable and score is not None and score.class_recalls and result.report:
            # judged even when overall accuracy already keeps the candidate: the report then
            # still shows every class's two recalls
            classes_pass, class_reason, report["gate"] = decide_classes(
                class_recalls(result.report), score.class_recalls, max_drop=s.max_class_drop)
            if promote:
                promote = classes_pass
                reason = f"{reason}; {class_reason}" if promote else class_reason
        if promote:
            promote, reason = self._promote_unless_changed(current, result.version, reason)
        if promote:
            report.update(status="promoted", decision="promote", reason=reason)
        else:
            status = "kept" if current is not None else "rejected"
            report.update(status=status, decision="keep", reason=reason)
        report["production"]["version_after"] = registry.read_production(self.registry, self.name)
        self._prune()

    # ------------------------------------------------------------------ steps
    def _promote_unless_changed(self, compared: str | None, version: str,
                                reason: str) -> tuple[bool, str]:
        """Promote ``version`` unless production is no longer ``compared``, the version the
        candidate was compared with (an operator promoted or rolled back meanwhile): read and
        written under the registry's lock, which admin calls hold too."""
        with production.ProductionLock(self.registry, self.name):
            now = registry.read_production(self.registry, self.name)
            if now != compared:
                return False, (f"production changed from v{compared} to v{now} while the "
                               "candidate was compared; kept (the next run compares with it)")
            self._critical(True)  # a signal now is deferred until the pointer is written
            try:
                production.promote(self.registry, self.name, version)
            finally:
                self._critical(False)
        return True, reason

    def _warm_start_source(self, production: str | None) -> str | None:
        """Production's verified weights file, when warm start is on and the architecture fits."""
        if not self.settings.warm_start or production is None:
            return None
        try:
            artifact = registry.load_artifact(self.registry, self.name, production)  # checks sha256
        except (registry.RegistryError, OSError) as exc:
            # A broken production model must not block the run that can replace it.
            log.warning("warm start skipped: production v%s is unreadable: %s", production, exc)
            return None
        meta = artifact.metadata
        if meta["architecture"] != self.recipe["model"] or \
                meta["architecture_kwargs"] != self.recipe["model_kwargs"]:
            log.warning("warm start skipped: production v%s is %s %s, the recipe trains %s %s",
                        production, meta["architecture"], meta["architecture_kwargs"],
                        self.recipe["model"], self.recipe["model_kwargs"])
            return None
        return str(artifact.path / registry.WEIGHTS_FILE)

    def _train_config(self, warm_from: str | None) -> TrainConfig:
        values = {
            **self.recipe,
            "registry": str(self.registry), "name": self.name,
            "runs_dir": str(self.settings.runs_dir),
            "run_name": f"{self.name}-{RUN_PREFIX}-{self.run_id}",
            "resume": None, "promote": False, "publish": True,
        }
        if warm_from:
            values["pretrained_weights"] = warm_from
        return TrainConfig(**values)

    def _score_production(
        self, version: str | None, cfg: TrainConfig, data: DataSplits
    ) -> tuple[ProductionScore | None, bool]:
        """(score, comparable) on ``data``, the candidate's own splits: never a second load,
        which would see files that arrived during training and test on another split.
        Not comparable: there is no production, or its artifact is unreadable (the service
        cannot serve it either, so a good candidate should replace it)."""
        if version is None:
            return None, False
        try:
            artifact = registry.load_artifact(self.registry, self.name, version)
        except (registry.RegistryError, OSError) as exc:
            log.error("production %s v%s is unreadable: %s", self.name, version, exc)
            return ProductionScore(None, None, "unavailable", f"unreadable artifact: {exc}"), False
        self.report["production"]["recorded_metrics"] = artifact.metadata.get("metrics")
        if not self.settings.reevaluate_production:
            recorded = artifact.metadata.get("metrics", {})
            accuracy = recorded.get(METRIC)
            return ProductionScore(None if accuracy is None else float(accuracy),
                                   recorded.get("test_loss"), "recorded",
                                   "SCHEDULE_REEVALUATE_PRODUCTION=false"), True
        return score_production(artifact, cfg, data), True

    def _prune(self) -> None:
        keep_versions, keep_runs = self.settings.keep_versions, self.settings.keep_runs
        try:
            if keep_versions:
                self.report["pruned_versions"] = production.prune_versions(
                    self.registry, self.name, keep_versions)
            if keep_runs:
                self.report["pruned_runs"] = prune_runs(
                    Path(self.settings.runs_dir), self.name, keep_runs)
        except Exception as exc:  # a failed clean-up must not turn a good run into a failed one
            log.warning("retrain %s: pruning failed: %s", self.name, exc)
            self.report["prune_error"] = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ output
    def reports_dir(self) -> Path:
        return self.settings.reports_dir or registry.model_dir(self.registry, self.name) / "reports"

    def _write_report(self) -> Path | None:
        path = self.reports_dir() / f"{self.run_id}.json"
        try:
            atomic_write_bytes(path, json.dumps(self.report, indent=2, default=str).encode())
        except OSError as exc:
            log.error("could not write the run report %s: %s", path, exc)
            return None
        return path

    def _log_summary(self, path: Path | None) -> None:
        r = self.report
        candidate = r["candidate"] or {}
        accuracy = (candidate.get("metrics") or {}).get(METRIC)
        level = {"promoted": logging.INFO, "kept": logging.INFO,
                 "skipped": logging.INFO}.get(r["status"], logging.ERROR)
        production = r["production"] or {}
        log.log(level, "retrain %s: %s: %s | candidate %s %s=%s | production %s -> %s "
                "| %.1f s | report %s",
                self.name, r["status"], r["reason"], _v(candidate.get("version")), METRIC,
                "n/a" if accuracy is None else f"{accuracy:.4f}",
                _v(production.get("version_before")), _v(production.get("version_after")),
                r["durations"]["total_s"], path)


def _v(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


def prune_runs(runs_dir: Path, name: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest run directories this job created for ``name``
    (run names sort by their UTC timestamp); runs started by hand are never touched."""
    prefix = f"{name}-{RUN_PREFIX}-"
    if not runs_dir.is_dir():
        return []
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name.startswith(prefix))
    removed = []
    for run in runs[:-keep] if keep else []:
        shutil.rmtree(run, ignore_errors=True)
        removed.append(run.name)
    return removed
