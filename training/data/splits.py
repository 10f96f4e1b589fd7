"""``load_data``: a dataset source turned into train / validation / test splits plus the
evaluation preprocessing that will travel with the published model.

Splits are seeded and reproducible; files of a growing folder keep their side (see
:func:`split_holdout`)."""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from artifacts.preprocess import InputSpec
from training.config import TrainConfig
from training.data.batches import channel_mean_std
from training.data.sources import ImageTensors, load_raw

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    train: ImageTensors
    val: ImageTensors
    test: ImageTensors
    classes: list[str]
    input_spec: InputSpec  # normalisation statistics come from the training split only

    def describe(self) -> str:
        return f"train={len(self.train)} val={len(self.val)} test={len(self.test)} classes={len(self.classes)}"


def load_data(cfg: TrainConfig) -> DataSplits:
    """Decode the dataset once and split it reproducibly (``cfg.seed``).

    The test split is the source's own test set (or, for an ImageFolder without ``test/``, a
    held-out share of ``train/`` chosen by each file's content, so it stays fixed as the folder
    grows) and is used only for the final report, never to choose anything; validation is
    carved from the training pool (the same way) unless the source has one.
    """
    raw = load_raw(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None,
                   download=cfg.download, channels=cfg.channels, image_size=cfg.image_size)
    pool, test = raw.train, raw.test
    if test is None:
        pool, test = split_holdout(pool, cfg.test_fraction, seed=cfg.seed + 1)
    train, val = (pool, raw.val) if raw.val is not None else split_holdout(pool, cfg.val_fraction, seed=cfg.seed)
    mean, std = channel_mean_std(train.images)
    _, channels, height, width = train.images.shape
    spec = InputSpec(channels=channels, height=height, width=width,
                     mean=tuple(round(m, 4) for m in mean), std=tuple(round(s, 4) for s in std))
    splits = DataSplits(train, val, test, raw.classes, spec)
    log.info("data %s: %s", cfg.dataset, splits.describe())
    return splits


def split_holdout(data: ImageTensors, fraction: float, *, seed: int) -> tuple[ImageTensors, ImageTensors]:
    """A seeded, reproducible split of ``data`` into (kept, held out), ``fraction`` held out.

    Samples with ``keys`` (ImageFolder files, a set that grows) are held out by a hash of
    ``(seed, key)``: each file's side depends on its own content alone, so adding or removing
    files never moves the others, and a test split stays unseen by the models trained before
    the data grew. Its size is then about ``fraction``. Fixed sources use a seeded permutation.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    if data.keys is not None:
        return _split_by_key(data, fraction, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    held = max(1, int(round(len(data) * fraction)))
    return data.subset(order[held:]), data.subset(order[:held])


def key_fraction(key: str, *, seed: int) -> float:
    """Where ``key`` falls in [0, 1) under ``seed``: the first 8 bytes of a sha256, so the same
    on every machine and Python version (``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_by_key(data: ImageTensors, fraction: float, *, seed: int) -> tuple[ImageTensors, ImageTensors]:
    scores = torch.tensor([key_fraction(key, seed=seed) for key in data.keys], dtype=torch.float64)
    held = scores < fraction  # (N,) bool
    if not held.any():  # keep at least one sample on each side
        held[scores.argmin()] = True
    if held.all():
        held[scores.argmax()] = False
    return data.subset(torch.nonzero(~held).flatten()), data.subset(torch.nonzero(held).flatten())
