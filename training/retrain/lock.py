"""One retraining run at a time, with a lock that cannot outlive a crashed holder.

The lock is a flock on a file (:mod:`artifacts.locks`), dropped by the kernel whatever way its
holder exits. The file also records who holds it (pid, host, start time),
so a refused run can say who it is waiting for, and a run that finds the record of a holder
which no longer holds the lock reports that stale record (a crashed previous run).

The file is never deleted: unlinking it while another process has it open would let two
processes lock two different inodes of the "same" lock file.
"""

import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from artifacts.locks import open_locked

log = logging.getLogger(__name__)


class LockBusyError(RuntimeError):
    """Another run holds the lock; the message names it."""


@dataclass
class LockInfo:
    """Who holds (or last held) the lock."""

    pid: int | None = None
    host: str | None = None
    acquired_at: str | None = None

    @classmethod
    def parse(cls, text: str) -> "LockInfo":
        try:
            data: dict[str, Any] = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            data = {}
        return cls(pid=data.get("pid"), host=data.get("host"), acquired_at=data.get("acquired_at"))

    def describe(self) -> str:
        if self.pid is None:
            return "an unknown process"
        return f"pid {self.pid} on {self.host} since {self.acquired_at}"


class RunLock:
    """Exclusive, non-blocking, crash-safe lock around one retraining run.

    Use as a context manager; ``stale`` tells whether a crashed holder's record was found.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.stale: LockInfo | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = open_locked(self.path, os.O_RDWR | os.O_CREAT, wait=False)
        except BlockingIOError:
            holder = LockInfo.parse(self.path.read_text(errors="replace"))
            raise LockBusyError(
                f"another retraining run holds {self.path}: {holder.describe()}"
            ) from None
        previous = LockInfo.parse(_read_all(fd))
        if previous.pid is not None:
            # We got the lock, yet a holder is recorded: it died without releasing.
            self.stale = previous
            log.warning("stale lock %s: the run of %s ended without releasing it (crashed?); "
                        "taking over", self.path, previous.describe())
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "acquired_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _rewrite(fd, json.dumps(me) + "\n")
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            _rewrite(self._fd, "")  # "free": an empty record is not stale
        finally:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _rewrite(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())
    os.fsync(fd)
