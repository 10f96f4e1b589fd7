"""The retraining job on a tiny generated ImageFolder: real training runs of about a second."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import registry
from training.schedule import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_NO_MODEL,
    EXIT_OK,
    Scheduler,
    run_schedule,
)
from training.schedule_compare import decide
from training.schedule_lock import LockBusyError, RunLock
from training.schedule_run import prune_runs
from training.schedule_settings import ScheduleSettings, load_recipe

REPO = Path(__file__).resolve().parents[2]
NAME = "toy"
GOOD = {"TRAIN_LR": "0.01", "TRAIN_EPOCHS": "3"}
BAD = {"TRAIN_LR": "1e-9", "TRAIN_EPOCHS": "1"}  # barely moves from its random initialisation


def _pattern(kind: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Three easy classes: horizontal stripes, vertical stripes, a checkerboard (plus noise)."""
    y, x = np.mgrid[0:size, 0:size]
    phase = int(rng.integers(0, 4))
    base = [((y + phase) // 2) % 2, ((x + phase) // 2) % 2, ((x // 2) + (y // 2) + phase) % 2][kind]
    noise = rng.normal(0, 0.15, (size, size))
    return (np.clip(base * 0.8 + 0.1 + noise, 0, 1) * 255).astype(np.uint8)


def make_imagefolder(root: Path, *, train_per_class: int = 24, test_per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in ("checks", "hstripes", "vstripes"):
            folder = root / split / label
            folder.mkdir(parents=True)
            order = {"hstripes": 0, "vstripes": 1, "checks": 2}[label]
            for i in range(count):
                Image.fromarray(_pattern(order, rng), mode="L").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"))


@pytest.fixture
def job_env(tmp_path, imagefolder, monkeypatch):
    """A clean job environment: the tiny data set, a tiny MLP, CPU fp32, one thread."""
    for key in list(os.environ):
        if key.startswith(("SCHEDULE_", "TRAIN_")) or key in ("MODEL_REGISTRY", "MODEL_NAME"):
            monkeypatch.delenv(key)
    env = {
        "MODEL_REGISTRY": str(tmp_path / "registry"), "MODEL_NAME": NAME,
        "SCHEDULE_RUNS_DIR": str(tmp_path / "runs"),
        "TRAIN_DATASET": "imagefolder", "TRAIN_DATA_DIR": str(imagefolder),
        "TRAIN_CHANNELS": "1", "TRAIN_IMAGE_SIZE": "16", "TRAIN_AUGMENT": "none",
        "TRAIN_MODEL": "mlp", "TRAIN_MODEL_KWARGS": '{"hidden": [32]}',
        "TRAIN_OPTIMIZER": "adam", "TRAIN_SCHEDULER": "none", "TRAIN_BATCH_SIZE": "16",
        "TRAIN_DEVICE": "cpu", "TRAIN_PRECISION": "fp32", "TRAIN_THREADS": "1", **GOOD,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def set_env(**overrides: str) -> None:
        for key, value in overrides.items():
            monkeypatch.setenv(key, value)

    set_env.registry = tmp_path / "registry"
    set_env.runs = tmp_path / "runs"
    set_env.env = env
    return set_env


def reports(registry_dir: Path) -> list[dict]:
    folder = registry_dir / NAME / "reports"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def production(registry_dir: Path) -> str | None:
    return registry.read_production(registry_dir, NAME)


# ---------------------------------------------------------------- the promotion rule

def test_decide_promotes_an_equal_candidate_with_zero_margin():
    assert decide(0.9, 0.9, margin=0.0, floor=0.0)[0]


def test_decide_refuses_when_the_margin_is_not_met():
    promote, reason = decide(0.905, 0.9, margin=0.01, floor=0.0)
    assert not promote and "0.9050 < production 0.9000" in reason


def test_decide_negative_margin_tolerates_a_small_drop():
    assert decide(0.895, 0.9, margin=-0.01, floor=0.0)[0]


def test_decide_first_run_needs_the_floor():
    assert decide(0.6, None, margin=0.0, floor=0.5)[0]
    promote, reason = decide(0.4, None, margin=0.0, floor=0.5)
    assert not promote and "below the floor" in reason


def test_decide_floor_applies_even_when_better_than_production():
    assert not decide(0.45, 0.40, margin=0.0, floor=0.5)[0]


# ---------------------------------------------------------------- runs end to end

def test_first_run_promotes_and_writes_a_report(job_env):
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "1"
    (report,) = reports(job_env.registry)
    assert report["status"] == "promoted" and report["decision"] == "promote"
    assert report["production"]["version_before"] is None
    assert report["production"]["version_after"] == "1"
    assert report["candidate"]["version"] == "1"
    assert report["candidate"]["metrics"]["test_accuracy"] >= 0.9  # the patterns are easy
    assert report["durations"]["train_s"] > 0 and report["durations"]["total_s"] > 0
    assert report["recipe"]["model"] == "mlp"
    # the artifact is a normal registry artifact the service can load
    assert registry.load_artifact(job_env.registry, NAME).metadata["class_labels"] == [
        "checks", "hstripes", "vstripes"]


def test_worse_candidate_is_refused_and_production_kept(job_env):
    assert run_schedule(once=True) == EXIT_OK
    job_env(**BAD)
    assert run_schedule(once=True) == EXIT_OK  # a correct refusal is not a failure
    assert production(job_env.registry) == "1"
    first, second = reports(job_env.registry)
    assert second["status"] == "kept" and second["decision"] == "keep"
    assert second["candidate"]["version"] == "2"  # published for the record, never served
    prod = second["production"]
    assert prod["source"] == "re-evaluated" and prod["version"] == "1"
    # re-evaluated on the same split it reproduces its recorded test accuracy exactly
    assert prod["test_accuracy"] == pytest.approx(first["candidate"]["metrics"]["test_accuracy"])
    assert second["candidate"]["metrics"]["test_accuracy"] < prod["test_accuracy"]
    assert "< production" in second["reason"]


def test_better_candidate_is_promoted(job_env):
    job_env(**BAD)
    assert run_schedule(once=True) == EXIT_OK  # floor 0: even a poor first model is served
    assert production(job_env.registry) == "1"
    job_env(**GOOD)
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "2"
    assert registry.previous_production(job_env.registry, NAME) == "1"
    last = reports(job_env.registry)[-1]
    assert last["status"] == "promoted"
    assert last["candidate"]["metrics"]["test_accuracy"] > last["production"]["test_accuracy"]


def test_first_candidate_below_the_floor_is_rejected(job_env):
    job_env(SCHEDULE_MIN_ACCURACY="0.99", **BAD)
    assert run_schedule(once=True) == EXIT_NO_MODEL
    assert production(job_env.registry) is None
    (report,) = reports(job_env.registry)
    assert report["status"] == "rejected" and "below the floor" in report["reason"]


def test_crash_mid_run_leaves_production_untouched(job_env, monkeypatch):
    assert run_schedule(once=True) == EXIT_OK
    pointer = job_env.registry / NAME / "production"
    before = pointer.read_bytes(), pointer.stat().st_mtime_ns
    import training.train

    real = training.train.train_one_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash: disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(training.train, "train_one_epoch", crash_in_second_epoch)
    assert run_schedule(once=True) == EXIT_FAILED
    assert (pointer.read_bytes(), pointer.stat().st_mtime_ns) == before
    assert registry.list_versions(job_env.registry, NAME) == ["1"]  # nothing half-published
    report = reports(job_env.registry)[-1]
    assert report["status"] == "failed" and report["decision"] == "keep"
    assert "disk on fire" in report["reason"] and "Traceback" in report["error"]["traceback"]
    # the lock was released: the next run goes ahead
    monkeypatch.setattr(training.train, "train_one_epoch", real)
    assert run_schedule(once=True) == EXIT_OK


def test_bad_data_fails_with_a_report(job_env, tmp_path):
    job_env(TRAIN_DATA_DIR=str(tmp_path / "missing"))
    assert run_schedule(once=True) == EXIT_FAILED
    (report,) = reports(job_env.registry)
    assert report["status"] == "failed" and "imagefolder needs --data-dir" in report["reason"]


def test_warm_start_initialises_from_production_weights(job_env):
    assert run_schedule(once=True) == EXIT_OK
    job_env(SCHEDULE_WARM_START="true", SCHEDULE_PROMOTION_MARGIN="-1", **BAD)
    assert run_schedule(once=True) == EXIT_OK
    last = reports(job_env.registry)[-1]
    weights = job_env.registry / NAME / "1" / "weights.pt"
    assert last["candidate"]["warm_start_from"] == str(weights)
    # with a learning rate of 1e-9 the candidate stays where it started: at production's level
    assert last["candidate"]["metrics"]["test_accuracy"] == pytest.approx(
        last["production"]["test_accuracy"])


def test_tampered_production_is_replaced_by_a_good_candidate(job_env):
    assert run_schedule(once=True) == EXIT_OK
    weights = job_env.registry / NAME / "1" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the service cannot load it
    job_env(SCHEDULE_WARM_START="true")
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "2"
    last = reports(job_env.registry)[-1]
    assert last["candidate"]["warm_start_from"] is None
    assert last["production"]["source"] == "unavailable"
    assert "no comparable production model" in last["reason"]


def test_invalid_settings_exit_2_naming_the_variable(job_env, caplog):
    job_env(SCHEDULE_CRON="every tuesday")
    assert run_schedule(once=True) == EXIT_CONFIG
    assert "invalid cron expression" in caplog.text


def test_unknown_recipe_variable_fails_listing_valid_ones(job_env):
    job_env(TRAIN_EPOCS="3")
    with pytest.raises(ValueError, match="TRAIN_EPOCS.*Valid: .*TRAIN_EPOCHS"):
        load_recipe()


def test_empty_optional_recipe_variables_mean_unset(job_env):
    job_env(TRAIN_DATA_DIR="", TRAIN_PATIENCE="", TRAIN_EPOCHS="7")
    recipe = load_recipe()
    assert recipe["data_dir"] is None and recipe["patience"] is None and recipe["epochs"] == 7


def test_job_owned_fields_cannot_be_set_through_the_recipe(job_env):
    job_env(TRAIN_REGISTRY="/elsewhere")
    with pytest.raises(ValueError, match="set by the job itself"):
        load_recipe()


# ---------------------------------------------------------------- the lock

def test_lock_refuses_a_second_holder(tmp_path):
    path = tmp_path / "job.lock"
    with RunLock(path):
        with pytest.raises(LockBusyError, match=f"pid {os.getpid()}"):
            RunLock(path).acquire()
    with RunLock(path) as lock:  # released: free again, and not stale
        assert lock.stale is None


def test_lock_of_a_crashed_holder_is_detected_as_stale(tmp_path):
    path = tmp_path / "job.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO)!r})
            from training.schedule_lock import RunLock
            RunLock({str(path)!r}).acquire()
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockBusyError, match=f"pid {holder.pid}"):
            RunLock(path).acquire()
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        holder.wait(timeout=10)
        with RunLock(path) as lock:
            assert lock.stale is not None and lock.stale.pid == holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_stale_record_with_a_dead_pid_is_taken_over(tmp_path):
    path = tmp_path / "job.lock"
    record = {"pid": 999999, "host": "gone", "acquired_at": "2020-01-01T00:00:00"}
    path.write_text(json.dumps(record))
    with RunLock(path) as lock:
        assert lock.stale.host == "gone"
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_busy_lock_skips_the_run_with_exit_75(job_env):
    lock_path = job_env.registry / NAME / ".schedule.lock"
    with RunLock(lock_path):
        assert run_schedule(once=True) == EXIT_BUSY
    assert production(job_env.registry) is None and not reports(job_env.registry)


def test_killed_run_leaves_production_untouched_and_the_lock_reusable(job_env):
    assert run_schedule(once=True) == EXIT_OK
    pointer = job_env.registry / NAME / "production"
    before = pointer.read_bytes()
    env = {**os.environ, "TRAIN_EPOCHS": "500", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "training", "schedule", "--once"], env=env,
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(job_env.runs.glob(f"{NAME}-retrain-*/checkpoints/last.pt")) or \
                len(list(job_env.runs.glob(f"{NAME}-retrain-*"))) < 2:
            assert time.monotonic() < deadline and child.poll() is None, "child never trained"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert pointer.read_bytes() == before
    assert registry.list_versions(job_env.registry, NAME) == ["1"]
    assert run_schedule(once=True) == EXIT_OK  # the kernel released the dead child's lock
    assert reports(job_env.registry)[-1]["stale_lock"]["pid"] == child.pid


def test_sigterm_interrupts_a_run_without_promoting(job_env):
    assert run_schedule(once=True) == EXIT_OK
    env = {**os.environ, "TRAIN_EPOCHS": "500", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "training", "schedule", "--once"], env=env,
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(job_env.runs.glob(f"{NAME}-retrain-*/checkpoints/last.pt"))) < 2:
        assert time.monotonic() < deadline and child.poll() is None, child.stderr.read()
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 143
    assert production(job_env.registry) == "1"
    assert reports(job_env.registry)[-1]["status"] == "interrupted"


# ---------------------------------------------------------------- pruning

def _fake_version(registry_dir: Path, version: str) -> None:
    folder = registry_dir / NAME / version
    folder.mkdir(parents=True)
    (folder / registry.METADATA_FILE).write_text("{}")


def test_prune_keeps_newest_production_and_previous(tmp_path):
    for v in range(1, 9):
        _fake_version(tmp_path, str(v))
    registry.promote(tmp_path, NAME, "2")
    registry.promote(tmp_path, NAME, "3")  # production 3, previous 2
    removed = registry.prune_versions(tmp_path, NAME, keep=3)
    assert removed == ["1", "4", "5"]
    assert registry.list_versions(tmp_path, NAME) == ["2", "3", "6", "7", "8"]
    assert not [p for p in (tmp_path / NAME).iterdir() if p.name.startswith(".trash")]


def test_prune_rejects_keep_below_one(tmp_path):
    with pytest.raises(ValueError):
        registry.prune_versions(tmp_path, NAME, keep=0)


def test_scheduled_runs_prune_old_versions_and_runs(job_env):
    job_env(SCHEDULE_KEEP_VERSIONS="2", SCHEDULE_KEEP_RUNS="2", SCHEDULE_PROMOTION_MARGIN="-1",
            TRAIN_EPOCHS="1")
    for _ in range(4):
        assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "4"
    assert registry.list_versions(job_env.registry, NAME) == ["3", "4"]
    assert len(list(job_env.runs.glob(f"{NAME}-retrain-*"))) == 2
    assert reports(job_env.registry)[-1]["pruned_versions"] == ["2"]


def test_prune_runs_ignores_runs_started_by_hand(tmp_path):
    for name in (f"{NAME}-retrain-1", f"{NAME}-retrain-2", f"{NAME}-retrain-3", "my-experiment"):
        (tmp_path / name).mkdir()
    assert prune_runs(tmp_path, NAME, keep=1) == [f"{NAME}-retrain-1", f"{NAME}-retrain-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-experiment", f"{NAME}-retrain-3"]


# ---------------------------------------------------------------- the schedule

def _scheduler(**env: str) -> Scheduler:
    return Scheduler(ScheduleSettings(**env), {"dataset": "fashion-mnist"})


def test_interval_is_fixed_rate_and_catches_up_once(job_env):
    job_env(SCHEDULE_INTERVAL_SECONDS="3600")
    scheduler = _scheduler()
    start = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    soon = start.replace(minute=5)
    assert scheduler.next_run(last_start=start, now=soon) == start.replace(hour=13)
    late = start.replace(hour=15)  # the run overran: go again now, not three times
    assert scheduler.next_run(last_start=start, now=late) == late


def test_cron_expression_wins_over_the_interval(job_env):
    job_env(SCHEDULE_CRON="30 3 * * *", SCHEDULE_INTERVAL_SECONDS="60")
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    expected = datetime(2026, 1, 2, 3, 30, tzinfo=timezone.utc)
    assert _scheduler().next_run(last_start=now, now=now) == expected


def test_cron_expression_in_a_time_zone(job_env):
    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Berlin")
    job_env(SCHEDULE_CRON="0 3 * * *", SCHEDULE_TIMEZONE="Europe/Berlin")
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    expected = datetime(2026, 1, 2, 2, 0, tzinfo=timezone.utc)  # 03:00 CET
    assert _scheduler().next_run(last_start=None, now=now) == expected


def test_loop_runs_at_start_then_on_the_interval_until_stopped(job_env):
    job_env(SCHEDULE_INTERVAL_SECONDS="0.2", SCHEDULE_RUN_ON_START="always",
            SCHEDULE_PROMOTION_MARGIN="-1", TRAIN_EPOCHS="1")
    scheduler = Scheduler(ScheduleSettings(), load_recipe())
    codes = []
    thread = threading.Thread(target=lambda: codes.append(scheduler.loop()))
    thread.start()
    deadline = time.monotonic() + 60
    while len(reports(job_env.registry)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
    thread.join(timeout=60)
    assert not thread.is_alive() and codes == [EXIT_OK]
    assert len(reports(job_env.registry)) >= 2
    assert all(r["status"] == "promoted" for r in reports(job_env.registry))


def test_an_error_raised_while_stopping_counts_as_an_interruption(job_env, monkeypatch):
    """A signal inside torch's C++ writer surfaces as RuntimeError; it must still be a stop."""
    from training import schedule_run
    from training.schedule_run import Interrupted, RetrainRun
    from training.schedule_settings import ScheduleSettings

    def crash(self):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(schedule_run.RetrainRun, "_run", crash)
    settings = ScheduleSettings()
    run = RetrainRun(settings, {}, NAME, stopping=lambda: True)
    with pytest.raises(Interrupted):
        run.execute()
    assert run.report["status"] == "interrupted"
    assert RetrainRun(settings, {}, NAME).execute().status == "failed"  # no stop asked: a failure
