"""The trainer killed for real (SIGKILL, mid-epoch) and resumed from ``last.pt``: the weights at
the end equal those of a run that was never interrupted.

(A checkpoint write that fails midway, disk full, is covered in
tests/artifacts/test_storage.py.)
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import REPO
from support.idx import make_idx_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Fashion-MNIST-shaped idx files, big enough that one epoch takes a moment."""
    return make_idx_dir(tmp_path_factory.mktemp("idx"), train=3000, test=200, labels="cycle")


def _command(data_dir: Path, runs: Path, run_name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training", "train", "--dataset", "fashion-mnist",
            "--data-dir", str(data_dir), "--model", "mlp", "--model-kwargs", '{"hidden": [256]}',
            "--epochs", "3", "--batch-size", "8", "--optimizer", "adam", "--lr", "0.001",
            "--scheduler", "cosine", "--seed", "3", "--device", "cpu", "--precision", "fp32",
            "--threads", "1", "--runs-dir", str(runs), "--run-name", run_name,
            "--registry", str(runs / "registry"), "--name", "faults", "--no-publish",
            "--no-progress", *extra]


def _checkpoint_times(process: subprocess.Popen, last: Path) -> list[float]:
    """Times at which ``last`` was (re)written while ``process`` runs."""
    times, seen = [], None
    while process.poll() is None:
        try:
            stamp = last.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp != seen:
            seen = stamp
            times.append(time.monotonic())
        time.sleep(0.005)
    return times


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(data_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"

    straight = subprocess.Popen(_command(data_dir, runs, "straight"), cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    saves = _checkpoint_times(straight, runs / "straight" / "checkpoints" / "last.pt")
    output = straight.communicate(timeout=300)[0].decode(errors="replace")
    assert straight.returncode == 0, output[-3000:]
    epoch_seconds = min(b - a for a, b in zip(saves, saves[1:], strict=False)) if len(
        saves) > 1 else 1.0

    killed = subprocess.Popen(_command(data_dir, runs, "killed"), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = runs / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists():
        assert killed.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(epoch_seconds / 2)  # half-way through the second epoch
    assert killed.poll() is None, "the run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    state = torch.load(last, weights_only=True)  # the kill left a whole, loadable checkpoint
    assert state["epoch"] == 0, "not killed mid-epoch: the second epoch had already finished"

    resumed = subprocess.run(_command(data_dir, runs, "killed", "--resume", str(last)), cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]

    a = torch.load(runs / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model_state_dict"].keys() == b["model_state_dict"].keys()
    for key, tensor in a["model_state_dict"].items():
        assert torch.equal(tensor, b["model_state_dict"][key]), key
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
