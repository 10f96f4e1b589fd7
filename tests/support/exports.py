"""Helpers of the export tests (tests/training/export): run an export, read what it wrote, and
compute probabilities the way a client of the exports would."""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from training.cli import main as cli_main

NAME = "fm"
TOLERANCE = 1e-4
BATCHES = (slice(0, 1), slice(1, 4), slice(4, 21))  # batch 1, 3 and 17: the batch axis is dynamic
SITE_PACKAGES = Path(torch.__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the tests share two cores


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=180)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(directory: Path) -> dict[str, str]:
    """Every entry below ``directory`` (hidden ones too): files by sha256, folders as 'dir'."""
    return {p.relative_to(directory).as_posix(): "dir" if p.is_dir() else sha256(p)
            for p in sorted(directory.rglob("*"))}


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def normalise(images: np.ndarray, manifest: dict) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` to the graph's input, by the contract export.json states."""
    mean = np.array(manifest["input"]["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(manifest["input"]["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255 - mean) / std).astype(np.float32)


def by_batches(probabilities, batch: np.ndarray) -> np.ndarray:
    """``probabilities`` run at batch 1, 3 and 17, concatenated."""
    return np.concatenate([probabilities(np.ascontiguousarray(batch[s])) for s in BATCHES])


def model_probabilities(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).float().softmax(dim=1).numpy()


def read_manifest(directory: Path) -> dict:
    return json.loads((directory / "export.json").read_text("utf-8"))


def cli(*args: str, registry_dir: Path) -> int:
    return cli_main(["export", *args, "--registry", str(registry_dir), "--name", NAME])

