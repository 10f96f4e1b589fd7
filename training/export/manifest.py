"""``export.json``: what an export directory holds and how to feed it.

One manifest per ``exports/<version>/``, written last, after the files it describes: the source
version (its ``weights_sha256``, so an export can be matched to the artifact it came from), the
input contract (shape, dtype, layout, normalisation, class labels; the output is logits, apply
softmax), and per format its files with their sha256, the libraries that wrote it and the
parity it was checked to. A client needs nothing else, and no project code, to use an export.
"""

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from artifacts.preprocess import InputSpec
from artifacts.storage import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

MANIFEST_FILE = "export.json"
MANIFEST_VERSION = 1
NORMALISATION = "x[c, h, w] = (pixel[c, h, w] / 255 - mean[c]) / std[c]"


def contract(spec: InputSpec, labels: list[str], *, input_name: str, output_name: str,
             test_time_augmentation: str) -> dict[str, Any]:
    """The input and output contract every format shares (the graph's tensor names included)."""
    return {
        "input": {
            "name": input_name, "shape": ["batch", spec.channels, spec.height, spec.width],
            "dtype": "float32", "layout": "NCHW",
            "color": "L (grayscale)" if spec.channels == 1 else "RGB",
            "resize": f"{spec.width}x{spec.height} (width x height), bilinear",
            "pixels": "uint8 0..255, transparency composited on black",
            "normalisation": NORMALISATION, "mean": list(spec.mean), "std": list(spec.std),
        },
        "output": {
            "name": output_name, "shape": ["batch", len(labels)], "dtype": "float32",
            "meaning": "logits: softmax over the last axis gives the class probabilities",
            # hflip: the graph runs each image and its mirror and returns log-probabilities,
            # whose softmax is the averaged probabilities (models.tta)
            "test_time_augmentation": test_time_augmentation,
        },
        "class_labels": list(labels),
    }


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest in ``directory``; None when there is none or it cannot be read (it is
    then rewritten from the formats exported now)."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): rewriting it", directory / MANIFEST_FILE, exc)
        return None
    return manifest if isinstance(manifest, dict) else None


def format_entry(directory: Path, files: list[Path], **details: Any) -> dict[str, Any]:
    """One format's entry: its files (relative to ``directory``) with their sha256, the time,
    and ``details`` (opset, libraries, parity ...)."""
    return {
        "files": {path.relative_to(directory).as_posix(): sha256_file(path) for path in files},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **details,
    }


def write_manifest(directory: Path, *, header: dict[str, Any], formats: dict[str, dict[str, Any]]) -> dict:
    """Write ``export.json`` in ``directory``: ``header`` (source and contract) and the
    ``formats`` it holds; returns the manifest."""
    manifest = {"manifest_version": MANIFEST_VERSION, **header, "formats": dict(sorted(formats.items()))}
    atomic_write_bytes(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
