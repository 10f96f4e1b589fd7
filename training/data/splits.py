"""``load_data``: a dataset source turned into train / validation / test splits plus the
evaluation preprocessing that will travel with the published model.

Splits are seeded and reproducible; files of a growing folder keep their side (see
:func:`split_holdout`)."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from artifacts.preprocess import InputSpec
from training.config import TrainConfig
from training.data.batches import channel_mean_std
from training.data.feedback import SOURCE as FEEDBACK
from training.data.feedback import load_feedback
from training.data.fingerprint import DataFingerprint, count_samples, fingerprint
from training.data.sources import ImageTensors, RawDataset, key_fraction, load_raw

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    train: ImageTensors
    val: ImageTensors
    test: ImageTensors
    classes: list[str]
    input_spec: InputSpec  # normalisation statistics come from the training split only
    dataset: str = "dataset"  # the source of samples that were never mixed (ImageTensors.sources)
    fingerprint: DataFingerprint | None = None
    counts: dict = field(default_factory=dict)  # {source: {split: {label: n}}}

    def describe(self) -> str:
        return f"train={len(self.train)} val={len(self.val)} test={len(self.test)} classes={len(self.classes)}"

    def test_sources(self) -> list[str]:
        return self.test.source_names(self.dataset)


def load_data(cfg: TrainConfig) -> DataSplits:
    """Decode the dataset once and split it reproducibly (``cfg.seed``).

    The test split is the source's own test set (or, for an ImageFolder without ``test/``, a
    held-out share of ``train/`` chosen by each file's content, so it stays fixed as the folder
    grows) and is used only for the final report, never to choose anything; validation is
    carved from the training pool (the same way) unless the source has one. With
    ``cfg.feedback_dir`` the feedback store's samples join each split on their fixed side
    (:mod:`training.data.feedback`). The splits carry the data's fingerprint and counts.
    """
    raw = load_raw(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None,
                   download=cfg.download, channels=cfg.channels, image_size=cfg.image_size)
    pool, test = raw.train, raw.test
    if test is None:
        pool, test = split_holdout(pool, cfg.test_fraction, seed=cfg.seed + 1)
    train, val = (pool, raw.val) if raw.val is not None else split_holdout(pool, cfg.val_fraction, seed=cfg.seed)
    parts = {"train": train, "val": val, "test": test}
    files, manifests = {}, {}
    if raw.files:
        files[cfg.dataset] = raw.files
    if raw.train.keys is not None:  # an ImageFolder: its files are the manifest
        manifests[cfg.dataset] = _keyed_manifest(raw, parts)
    if cfg.feedback_dir:
        _, channels, height, width = train.images.shape
        feedback = load_feedback(Path(cfg.feedback_dir), raw.classes, channels=channels, height=height,
                                 width=width, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
        manifests[FEEDBACK] = [list(entry) for entry in feedback.manifest]
        parts = {side: ImageTensors.mix({cfg.dataset: part, FEEDBACK: feedback.sides[side]})
                 for side, part in parts.items()}
    _, channels, height, width = parts["train"].images.shape
    mean, std = (channel_mean_std(parts["train"].images) if cfg.normalize == "dataset"
                 else ((0.0,) * channels, (1.0,) * channels))
    spec = InputSpec(channels=channels, height=height, width=width,
                     mean=tuple(round(m, 4) for m in mean), std=tuple(round(s, 4) for s in std))
    splits = DataSplits(parts["train"], parts["val"], parts["test"], raw.classes, spec, dataset=cfg.dataset,
                        fingerprint=fingerprint(files, manifests),
                        counts=count_samples(parts, raw.classes, cfg.dataset))
    log.info("data %s: %s", cfg.dataset, splits.describe())
    return splits


def _keyed_manifest(raw: RawDataset, parts: dict[str, ImageTensors]) -> list[list[str]]:
    """``[sha256, label, folder]`` of every file of an ImageFolder (``train``, ``val`` or
    ``test``: the folder it came from; splits carved out of ``train/`` follow from the hashes)."""
    folders = {"train": raw.train, "val": raw.val, "test": raw.test}
    return [[key, raw.classes[label], folder] for folder, data in folders.items() if data is not None
            for key, label in zip(data.keys, data.labels.tolist(), strict=True)]


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


def _split_by_key(data: ImageTensors, fraction: float, *, seed: int) -> tuple[ImageTensors, ImageTensors]:
    scores = torch.tensor([key_fraction(key, seed=seed) for key in data.keys], dtype=torch.float64)
    held = scores < fraction  # (N,) bool
    if not held.any():  # keep at least one sample on each side
        held[scores.argmin()] = True
    if held.all():
        held[scores.argmax()] = False
    return data.subset(torch.nonzero(~held).flatten()), data.subset(torch.nonzero(held).flatten())
