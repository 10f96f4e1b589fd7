"""The feedback store's layout: labelled images from clients, written by the service
(``POST /feedback``) and read by training (``TRAIN_FEEDBACK_DIR``)::

    FEEDBACK_DIR/<label directory>/<sha256 of the file>.<ext>

An ImageFolder layout, content-addressed: the same image sent twice is one file, and a file's
name is its identity (the split it falls in follows from it, docs/retraining.md).

A class label is not always a valid directory name (Fashion-MNIST's ``T-shirt/top``), so the
directory is the label percent-encoded: every byte outside ``A-Z a-z 0-9 - _ . , + ( ) space``
becomes ``%XX`` (UTF-8), and a leading ``.`` too, so no label can name ``.``, ``..`` or a
hidden directory: ``T-shirt/top`` -> ``T-shirt%2Ftop``. :func:`label_from_dirname` maps it back.
Names starting with ``.`` (temp files of atomic writes, hidden directories) are never samples.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

_SAFE = " -_.,+()"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The image formats the service accepts, by PIL format name, and the extension each is stored as.
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff",
              "WEBP": "webp", "PPM": "ppm"}


def label_dirname(label: str) -> str:
    """The directory name of ``label`` (reversible; see the module docstring)."""
    if not label:
        raise ValueError("a class label cannot be empty")
    encoded = quote(label, safe=_SAFE)
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def label_from_dirname(name: str) -> str:
    return unquote(name)


def sample_path(root: Path, label: str, sha256: str, extension: str) -> Path:
    if not _SHA256.match(sha256) or extension not in EXTENSIONS.values():
        raise ValueError(f"not a feedback sample name: {sha256}.{extension}")
    return Path(root) / label_dirname(label) / f"{sha256}.{extension}"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    sha256: str  # from the file name; the reader that opens the file may check it


def iter_samples(root: Path) -> Iterator[Sample]:
    """Every stored sample, sorted by (label directory, file name); anything that is not a
    ``<sha256>.<ext>`` file in a label directory (temp files, notes, hidden entries) is skipped."""
    root = Path(root)
    if not root.is_dir():
        return
    for directory in sorted(root.iterdir()):
        if directory.name.startswith(".") or not directory.is_dir():
            continue
        label = label_from_dirname(directory.name)
        for path in sorted(directory.iterdir()):
            stem, dot, extension = path.name.partition(".")
            if dot and _SHA256.match(stem) and extension in EXTENSIONS.values() and path.is_file():
                yield Sample(path, label, stem)
