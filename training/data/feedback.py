"""The feedback store (``--feedback-dir``, ``TRAIN_FEEDBACK_DIR``) as training data.

Clients label images through the service's ``POST /feedback``, which stores them as
``<label>/<sha256>.<ext>`` (:mod:`artifacts.feedback`). Here they are decoded once, through the
same conversion as an ImageFolder (and as the service's decoder), into the dataset's own input
shape, and each file is given a fixed side, train, validation or test, by its hash alone: not
by ``--seed`` nor by what else is in the store, so a file that was once in the test split stays
there as the store grows, and no model is ever tested on images it was trained on.
"""

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from artifacts.feedback import Sample, iter_samples
from artifacts.preprocess import InputSpec, image_to_uint8
from training.data.sources import ImageTensors, key_fraction

log = logging.getLogger(__name__)

SOURCE = "feedback"
# The salt of the side a file falls on: a constant, so sides never move (see the docstring).
_SIDE_SALT = "feedback-split-v1"
SIDES = ("train", "val", "test")


def side_of(sha256: str, *, val_fraction: float, test_fraction: float) -> str:
    """``train``, ``val`` or ``test`` for the file whose content hash is ``sha256``."""
    where = key_fraction(sha256, seed=_SIDE_SALT)
    if where < test_fraction:
        return "test"
    return "val" if where < test_fraction + val_fraction else "train"


@dataclass
class FeedbackData:
    """The usable samples of the store by side, and what was left out and why."""

    sides: dict[str, ImageTensors]  # train / val / test, keys = content hashes
    manifest: list[tuple[str, str]]  # sorted (sha256, label) of every sample used
    skipped: dict[str, int]  # reason -> count (unknown label, unreadable, hash mismatch)

    def __len__(self) -> int:
        return len(self.manifest)


def load_feedback(root: Path, classes: list[str], *, channels: int, height: int, width: int,
                  val_fraction: float, test_fraction: float) -> FeedbackData:
    """Decode every sample of the store whose label is one of ``classes`` into uint8
    ``(C, H, W)``. A label the dataset does not have, a file that does not decode, or a file
    whose content does not match its name is skipped with a warning, never a failed run: the
    store is written by clients."""
    spec = InputSpec(channels=channels, height=height, width=width,
                     mean=(0.0,) * channels, std=(1.0,) * channels)
    index = {label: i for i, label in enumerate(classes)}
    by_side: dict[str, list[tuple[torch.Tensor, int, str]]] = {side: [] for side in SIDES}
    skipped: dict[str, int] = {}
    manifest: list[tuple[str, str]] = []
    for sample in iter_samples(root):
        reason = _problem(sample, index)
        image = None
        if reason is None:
            image, reason = _decode(sample, spec)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        side = side_of(sample.sha256, val_fraction=val_fraction, test_fraction=test_fraction)
        by_side[side].append((image, index[sample.label], sample.sha256))
        manifest.append((sample.sha256, sample.label))
    for reason, count in skipped.items():
        log.warning("feedback %s: skipped %d file(s): %s", root, count, reason)
    sides = {side: _tensors(rows, spec) for side, rows in by_side.items()}
    log.info("feedback %s: %d samples (train %d, val %d, test %d)", root, len(manifest),
             *(len(sides[side]) for side in SIDES))
    return FeedbackData(sides, sorted(manifest), skipped)


def _problem(sample: Sample, index: dict[str, int]) -> str | None:
    if sample.label not in index:
        return f"label {sample.label!r} is not a class of the dataset"
    return None


def _decode(sample: Sample, spec: InputSpec) -> tuple[torch.Tensor | None, str | None]:
    try:
        data = sample.path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    if hashlib.sha256(data).hexdigest() != sample.sha256:
        return None, "content does not match the file name (edited by hand?)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image_to_uint8(ImageOps.exif_transpose(image), spec=spec), None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"not a decodable image ({type(exc).__name__})"


def _tensors(rows: list[tuple[torch.Tensor, int, str]], spec: InputSpec) -> ImageTensors:
    if not rows:
        return ImageTensors(torch.empty((0, spec.channels, spec.height, spec.width), dtype=torch.uint8),
                            torch.empty(0, dtype=torch.int64), [])
    images, labels, keys = zip(*rows, strict=True)
    return ImageTensors(torch.stack(images), torch.tensor(labels, dtype=torch.int64), list(keys))
