"""The feedback store as the service writes it: labelled images, content-addressed, on disk.

Layout and label encoding are :mod:`artifacts.feedback`'s (``FEEDBACK_DIR/<label dir>/<sha256>.<ext>``,
read by training). This module adds what a writer needs:

- **dedup**: a file is named by the sha256 of its bytes, so the same image sent twice is one
  file; the second time it is reported ``stored=False``. The same image under *another* label is
  refused (:class:`~service.errors.LabelConflictError`): one image, one truth, or training
  would learn both.
- **atomic writes**: :func:`artifacts.storage.atomic_write_bytes` (temp file, fsync, rename), so
  the training reader never sees half a file, and a failure leaves none.
- **a log**: one JSON line per image in ``FEEDBACK_DIR/feedback.jsonl`` (a top-level file, which
  the training reader ignores), appended with ``O_APPEND`` in one write per request.
- **all or nothing**: a request's files and log lines are written under an exclusive ``flock``
  on ``FEEDBACK_DIR`` (the workers of all servers sharing the store take turns); when anything
  fails, the files this request added are removed and the log is cut back.
- **errors that say what to do**: a full disk or quota becomes
  :class:`~service.errors.FeedbackStoreFullError` (507), any other ``OSError`` (read-only,
  permissions, a missing directory that cannot be created)
  :class:`~service.errors.FeedbackStoreUnavailableError` (503). Nothing here knows HTTP.

Blocking (fsync): the route calls :meth:`FeedbackStore.add` in a thread.
"""

import errno
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from artifacts.feedback import label_dirname, label_from_dirname, sample_path
from artifacts.locks import open_locked
from artifacts.storage import atomic_write_bytes
from service.errors import (
    FeedbackStoreFullError,
    FeedbackStoreUnavailableError,
    LabelConflictError,
)

log = logging.getLogger(__name__)

LOG_NAME = "feedback.jsonl"
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class CheckedImage:
    """An image the service decoded: its original bytes, their sha256 and the extension of
    the format that decoded it (:data:`artifacts.feedback.EXTENSIONS`)."""

    data: bytes
    sha256: str
    extension: str


@dataclass(frozen=True)
class Saved:
    sha256: str
    stored: bool  # False: the store already had this file


class FeedbackStore:
    """Writes labelled images under ``root`` (``FEEDBACK_DIR``); stateless, cheap to make."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def add(self, label: str, images: Sequence[CheckedImage], *, model: str, version: str,
            request_id: str | None = None) -> list[Saved]:
        """Store ``images`` under ``label`` and log them; one :class:`Saved` per image, in
        order (an image repeated within the request is stored once, then reported known)."""
        written: list[Path] = []
        try:
            with self._locked():
                saved = self._write(label, images, written)
                self._append_log(label, images, saved, model=model, version=version,
                                 request_id=request_id)
        except BaseException as exc:
            for path in written:  # all or nothing: a retry starts from the same store
                with suppress(OSError):
                    path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._mapped(exc) from exc
            raise
        return saved

    # ------------------------------------------------------------------ steps of add()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on the store's directory (made first when missing): works on a
        read-only mount too, so that a read-only store fails on its write, with its reason."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = open_locked(self.root, os.O_RDONLY | os.O_DIRECTORY, wait=True)
        try:
            yield
        finally:
            os.close(fd)

    def _write(self, label: str, images: Sequence[CheckedImage], written: list[Path]) -> list[Saved]:
        seen: set[str] = set()
        for image in images:  # refuse a conflict before writing anything
            if image.sha256 not in seen:
                seen.add(image.sha256)
                other = self._label_of(image, besides=label)
                if other is not None:
                    raise LabelConflictError(
                        f"image {image.sha256} is already stored with label {other!r}; one image "
                        f"cannot have two labels (nothing was stored)", id=image.sha256,
                        stored_label=other)
        saved: list[Saved] = []
        done: set[str] = set()
        for image in images:
            path = sample_path(self.root, label, image.sha256, image.extension)
            new = image.sha256 not in done and not _is_stored(path, len(image.data))
            if new:
                atomic_write_bytes(path, image.data)
                written.append(path)
            done.add(image.sha256)
            saved.append(Saved(image.sha256, new))
        return saved

    def _label_of(self, image: CheckedImage, *, besides: str) -> str | None:
        """The label another directory stores ``image`` under, if any."""
        own = label_dirname(besides)
        name = f"{image.sha256}.{image.extension}"
        with os.scandir(self.root) as entries:
            for entry in entries:
                if (entry.name != own and not entry.name.startswith(".") and entry.is_dir()
                        and os.path.exists(os.path.join(entry.path, name))):
                    return label_from_dirname(entry.name)
        return None

    def _append_log(self, label: str, images: Sequence[CheckedImage], saved: list[Saved], *,
                    model: str, version: str, request_id: str | None) -> None:
        """One JSON line per image, in one ``O_APPEND`` write; cut back on a failure (no other
        writer appends meanwhile: they wait for the lock)."""
        received_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        lines = []
        for image, result in zip(images, saved, strict=True):
            entry = {"id": image.sha256, "label": label,
                     "file": f"{label_dirname(label)}/{image.sha256}.{image.extension}",
                     "stored": result.stored, "model": model, "version": version,
                     "received_at": received_at}
            if request_id is not None:
                entry["request_id"] = request_id
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
        data = "".join(lines).encode()
        fd = os.open(self.root / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                count = os.write(fd, data)
                if count != len(data):  # a short write: the disk filled up mid-line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def _mapped(self, exc: OSError) -> Exception:
        """The domain error of a failed write (the operator's log line has the path)."""
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        if exc.errno in _FULL:
            log.error("feedback store %s is full: %s", self.root, exc)
            return FeedbackStoreFullError(
                f"the feedback store is full ({reason.lower()}): nothing was stored; retry once "
                "the operator has freed space")
        log.error("feedback store %s cannot be written: %s", self.root, exc)
        return FeedbackStoreUnavailableError(
            f"the feedback store cannot be written ({reason.lower()}): nothing was stored; "
            "FEEDBACK_DIR must be a writable directory (the operator's log has the details)")


def _is_stored(path: Path, size: int) -> bool:
    """The file is there whole (a file of another size, damaged by hand, is written again)."""
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False

