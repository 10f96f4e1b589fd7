"""Feedback stores as the service writes them (``artifacts.feedback``), for training tests."""

import hashlib
from pathlib import Path

import numpy as np

from artifacts.feedback import sample_path
from support.images import encode, stripe_image


def store_feedback(root: Path, label: str, data: bytes, extension: str = "png") -> Path:
    """Put one labelled image file into the store, content-addressed; its path."""
    path = sample_path(root, label, hashlib.sha256(data).hexdigest(), extension)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stripe_feedback(root: Path, label: str, count: int, *, pattern: int, seed: int,
                    size: int = 16) -> list[Path]:
    """``count`` distinct stripe images (``support.images.stripe_image`` pattern 0, 1 or 2)
    labelled ``label``."""
    rng = np.random.default_rng(seed)
    return [store_feedback(root, label, encode(stripe_image(pattern, rng, size=size)))
            for _ in range(count)]
