"""When the job runs and how it stops: interval and cron timing, the loop, and interruptions."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from support import REPO
from support.retrain import NAME, production, reports

from training.retrain.loop import EXIT_OK, Scheduler, run_schedule
from training.retrain.settings import ScheduleSettings, load_recipe


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


def test_cron_follows_daylight_saving_and_nicknames(job_env):
    pytest.importorskip("zoneinfo").ZoneInfo("Europe/Berlin")
    job_env(SCHEDULE_CRON="0 3 * * *", SCHEDULE_TIMEZONE="Europe/Berlin")
    before_the_switch = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)  # clocks go forward on the 29th
    expected = datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)  # 03:00 CEST
    assert _scheduler().next_run(last_start=None, now=before_the_switch) == expected
    job_env(SCHEDULE_CRON="@hourly", SCHEDULE_TIMEZONE="UTC")
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    assert _scheduler().next_run(last_start=None, now=now) == now.replace(hour=13, second=0)


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


def test_sigterm_interrupts_a_run_without_promoting(job_env):
    assert run_schedule(once=True) == EXIT_OK
    env = {**os.environ, "TRAIN_EPOCHS": "500", "PYTHONPATH": str(REPO)}
    # Its log goes to a file, not a pipe: an undrained pipe fills up (a line per epoch) and
    # blocks the child mid-write, so that it could never finish stopping.
    log_path = job_env.runs / "child.log"
    with open(log_path, "wb") as log_file:
        child = subprocess.Popen([sys.executable, "-m", "training", "schedule", "--once"], env=env,
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.monotonic() + 60
        while len(list(job_env.runs.glob(f"{NAME}-retrain-*/checkpoints/last.pt"))) < 2:
            assert time.monotonic() < deadline and child.poll() is None, log_path.read_text()
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 143, log_path.read_text()[-3000:]
    finally:
        child.kill()
        child.wait(timeout=10)
    assert production(job_env.registry) == "1"
    assert reports(job_env.registry)[-1]["status"] == "interrupted"


def test_an_error_raised_while_stopping_counts_as_an_interruption(job_env, monkeypatch):
    """A signal inside torch's C++ writer surfaces as RuntimeError; it must still be a stop."""
    from training.retrain.run import Interrupted, RetrainRun
    from training.retrain.settings import ScheduleSettings

    def crash(self):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(RetrainRun, "_run", crash)
    settings = ScheduleSettings()
    run = RetrainRun(settings, {}, NAME, stopping=lambda: True)
    with pytest.raises(Interrupted):
        run.execute()
    assert run.report["status"] == "interrupted"
    assert RetrainRun(settings, {}, NAME).execute().status == "failed"  # no stop asked: a failure
