"""Classify image files with a published artifact, in-process (``python -m training predict``)."""

from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image, ImageOps

from artifacts import registry
from artifacts.preprocess import EvalTransform, image_to_uint8


def predict_files(
    registry_dir: Path, name: str, version: str | None, paths: list[Path]
) -> Iterator[tuple[Path, str, float]]:
    """Yield ``(path, label, softmax score)`` per file, preprocessing exactly as in training."""
    artifact = registry.load_artifact(registry_dir, name, version)
    spec = artifact.input_spec
    transform = EvalTransform(spec=spec)
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image_to_uint8(ImageOps.exif_transpose(image), spec=spec))
    with torch.inference_mode():
        probabilities = artifact.model(transform(torch.stack(images))).softmax(dim=1)  # (N, classes)
    scores, indices = probabilities.max(dim=1)
    for path, score, index in zip(paths, scores.tolist(), indices.tolist(), strict=True):
        yield path, artifact.class_labels[index], score
