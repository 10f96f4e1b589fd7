"""Atomic file writes and safe tensor loading, shared by checkpoints and published artifacts.

Every file the project writes goes through :func:`atomic_write`: a temp file in the same
directory, fsync, ``os.replace``, fsync of the directory. A crash or a full disk midway leaves
the previous file intact and never a half-written one under the real name.
"""

import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


class CorruptFileError(ValueError):
    """A checkpoint or artifact file that is truncated, tampered with, or not ours."""


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` to ``target`` on the same filesystem, replacing
    any directory already there (re-running an export).

    POSIX renames a directory only onto an empty one, so an existing ``target`` is first renamed
    aside and deleted after: a reader sees the old tree, the new tree, or for the instant
    between the two renames none, never a mix of both or a half-written one.
    """
    source, target = Path(source), Path(target)
    old = _aside(target) if target.exists() else None
    try:
        os.rename(source, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)  # the old tree back: a failed replace changes nothing
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Delete a directory after renaming it to a hidden name beside it, so that readers see it
    complete or gone, never half-deleted."""
    shutil.rmtree(_aside(Path(path)), ignore_errors=True)


def _aside(path: Path) -> Path:
    """Rename ``path`` to a hidden ``.trash-<name>-<random>`` beside it; returns the new path."""
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex}")
    os.rename(path, trash)
    return trash


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_torch_load(source: Path | bytes, *, what: str = "file") -> Any:
    """``torch.load(weights_only=True)`` on CPU, with every failure turned into one clear error.

    ``weights_only=True`` refuses pickled code (a tampered file cannot run anything); a
    truncated zip or a foreign pickle raises :class:`CorruptFileError` naming the file.
    """
    name = str(source) if isinstance(source, Path) else what
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(handle, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(
            f"{name} is not a loadable weights-only torch file (truncated, tampered with, "
            f"or written by another program): {reason}"
        ) from exc
