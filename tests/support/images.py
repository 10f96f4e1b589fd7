"""Images made on the fly: learnable band images, encoded image files, ImageFolder trees."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

BAND_CLASSES = ("circle", "square", "stripe")
STRIPE_CLASSES = ("checks", "hstripes", "vstripes")


def band_images(count: int, *, seed: int, classes: int = 10, size: int = 28, channels: int = 1,
                labels: str = "cycle") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W), or (N, H, W, C) for ``channels`` > 1, and their uint8 labels (N,):
    the class is the row of a bright horizontal band, plus noise. Easy enough that a few epochs
    learn it, varied enough that accuracy means something. ``labels="cycle"`` gives the classes
    in turn (one of each in every ``classes`` images), ``"random"`` draws them."""
    rng = np.random.default_rng(seed)
    if labels == "random":
        targets = rng.integers(0, classes, size=count)
    elif labels == "cycle":
        targets = np.arange(count) % classes
    else:
        raise ValueError(f"labels must be 'cycle' or 'random', not {labels!r}")
    images = rng.integers(0, 60, size=(count, size, size, channels), dtype=np.int64)
    band = max(1, size // classes)
    for i, label in enumerate(targets):
        images[i, label * band:(label + 1) * band] += 150
    images = np.clip(images, 0, 255).astype(np.uint8)
    return (images[..., 0] if channels == 1 else images), targets.astype(np.uint8)


def stripe_image(kind: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """uint8 (H, W), one of three easy classes: horizontal stripes (0), vertical stripes (1) or
    a checkerboard (2), shifted by a random phase, plus noise."""
    y, x = np.mgrid[0:size, 0:size]
    phase = int(rng.integers(0, 4))
    base = [((y + phase) // 2) % 2, ((x + phase) // 2) % 2, ((x // 2) + (y // 2) + phase) % 2][kind]
    noise = rng.normal(0, 0.15, (size, size))
    return (np.clip(base * 0.8 + 0.1 + noise, 0, 1) * 255).astype(np.uint8)


def encode(array_or_image, fmt: str = "PNG", **save) -> bytes:
    """The bytes of an image file: a uint8 array or a PIL image saved as ``fmt``."""
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(
        array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def make_imagefolder(root: Path, *, pattern: str = "bands", splits: dict[str, int] | None = None,
                     size: int = 16) -> Path:
    """A user's ImageFolder, ``root/<split>/<class>/<n>.png``, with ``splits[split]`` images
    per class (default: 12 in ``train`` alone).

    ``pattern="bands"``: RGB band images of the classes circle, square and stripe, a pixel or
    two wider in turn (the loader resizes them); the classes are drawn at random, and a class
    left without an image gets a black one. ``pattern="stripes"``: grayscale checks, hstripes
    and vstripes (:func:`stripe_image`), exactly ``splits[split]`` of each: what the
    retraining job learns to 90% and more in a second."""
    splits = {"train": 12} if splits is None else splits
    if pattern == "bands":
        _write_bands(root, splits, size)
    elif pattern == "stripes":
        _write_stripes(root, splits, size)
    else:
        raise ValueError(f"pattern must be 'bands' or 'stripes', not {pattern!r}")
    return root


def _write_bands(root: Path, splits: dict[str, int], size: int) -> None:
    for s, (split, per_class) in enumerate(splits.items()):
        images, labels = band_images(per_class * len(BAND_CLASSES), classes=len(BAND_CLASSES),
                                     size=size, channels=3, seed=10 + s, labels="random")
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / BAND_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).resize((size + i % 3, size)).save(folder / f"{i}.png")
        for name in BAND_CLASSES:  # every class needs at least one image in every split
            folder = root / split / name
            if not folder.exists() or not any(folder.iterdir()):
                folder.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (size, size)).save(folder / "filler.png")


def _write_stripes(root: Path, splits: dict[str, int], size: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in splits.items():
        for label in STRIPE_CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True)
            kind = {"hstripes": 0, "vstripes": 1, "checks": 2}[label]
            for i in range(count):
                Image.fromarray(stripe_image(kind, rng, size), mode="L").save(folder / f"{i}.png")
