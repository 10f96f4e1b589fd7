"""The run lock: one run at a time, stale locks of crashed or killed holders taken over."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support import REPO
from support.retrain import NAME, production, reports

from artifacts import registry
from training.retrain.lock import LockBusyError, RunLock
from training.retrain.loop import EXIT_BUSY, EXIT_OK, run_schedule


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
            from training.retrain.lock import RunLock
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
