"""torchrun with 2 CPU processes (gloo) on tiny data: the real launcher, really distributed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from artifacts import registry

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun(idx_dir: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    args = TORCHRUN + ["-m", "training", "train", "--data-dir", str(idx_dir), "--model", "mlp",
                       "--model-kwargs", '{"hidden": [32]}', "--batch-size", "32", "--optimizer", "adam",
                       "--lr", "0.01", "--scheduler", "none", "--precision", "fp32", "--threads", "1",
                       "--runs-dir", "runs", "--registry", "reg", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_publish_an_artifact_the_service_loads(idx_dir, tmp_path):
    proc = torchrun(idx_dir, tmp_path, "--epochs", "2", "--run-name", "ddp", "--promote")
    assert proc.stdout.count("test_accuracy=") == 1  # rank 0 alone reports
    artifact = registry.load_artifact(tmp_path / "reg", "fashion-mnist")  # the service's loader
    assert not any(key.startswith("module.") for key in artifact.model.state_dict())
    metadata = json.loads((artifact.path / "metadata.json").read_text())
    assert metadata["metrics"]["test_samples"] == 100  # every test image once, none padded twice
    assert "global batch 64" in proc.stderr


def test_resumed_distributed_run_matches_an_uninterrupted_one(idx_dir, tmp_path):
    torchrun(idx_dir, tmp_path, "--epochs", "3", "--run-name", "straight", "--no-publish")
    torchrun(idx_dir, tmp_path, "--epochs", "2", "--run-name", "first", "--no-publish")
    last = tmp_path / "runs" / "first" / "checkpoints" / "last.pt"
    torchrun(idx_dir, tmp_path, "--epochs", "3", "--resume", str(last), "--no-publish")
    straight = torch.load(tmp_path / "runs" / "straight" / "checkpoints" / "last.pt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 2
    for key, tensor in straight["model_state_dict"].items():
        assert torch.equal(tensor, resumed["model_state_dict"][key]), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_nccl_single_process_group(idx_dir, tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
            "-m", "training", "train", "--data-dir", str(idx_dir), "--model", "mlp", "--epochs", "1",
            "--device", "cuda", "--runs-dir", "runs", "--registry", "reg", "--no-progress"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "backend nccl" in proc.stderr, proc.stderr[-2000:]
