"""Classify image files with a published artifact, in-process (``python -m training predict``)."""

from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image, ImageOps

from artifacts import registry
from artifacts.preprocess import EvalTransform, InputSpec, image_to_uint8


class ImageFileError(ValueError):
    """A file given to classify that is missing or not an image Pillow can decode; the
    message names the resolved path."""


def read_image(path: Path, *, spec: InputSpec) -> torch.Tensor:
    """One file as the model's uint8 input ``(C, H, W)``, decoded exactly as in training."""
    try:
        with Image.open(path) as image:
            return image_to_uint8(ImageOps.exif_transpose(image), spec=spec)
    # UnidentifiedImageError and truncated files are OSErrors; some broken headers raise
    # ValueError or SyntaxError; DecompressionBombError is none of them.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageFileError(f"{path.resolve()} is not an image Pillow can read ({exc}); "
                             "pass PNG, JPEG or other image files") from None


def predict_files(
    registry_dir: Path, name: str, version: str | None, paths: list[Path]
) -> Iterator[tuple[Path, str, float]]:
    """Yield ``(path, label, softmax score)`` per file, preprocessing exactly as in training."""
    for path in paths:  # before the model loads: a typo should not wait for it
        if not path.is_file():
            raise ImageFileError(f"{path.resolve()} is not a file: check the path")
    artifact = registry.load_artifact(registry_dir, name, version)
    spec = artifact.input_spec
    transform = EvalTransform(spec=spec)
    images = torch.stack([read_image(path, spec=spec) for path in paths])  # (N, C, H, W) uint8
    with torch.inference_mode():
        probabilities = artifact.model(transform(images)).softmax(dim=1)  # (N, classes)
    scores, indices = probabilities.max(dim=1)
    for path, score, index in zip(paths, scores.tolist(), indices.tolist(), strict=True):
        yield path, artifact.class_labels[index], score
