"""The one way this project takes a cross-process lock: ``fcntl.flock`` on an open file.

The kernel drops a flock when its holder's file descriptor closes, which includes every way a
process can die (exception, SIGKILL, OOM kill, container stop): no stale lock to clean up by
hand and no timeout to guess. Used by the production pointer's lock (on the model's directory,
so a read-only registry locks too) and by the retraining job's run lock (on a file that records
its holder).
"""

import fcntl
import os
from pathlib import Path


def open_locked(path: Path, flags: int, *, wait: bool) -> int:
    """Open ``path`` with ``flags`` and hold an exclusive flock on it; returns the descriptor,
    whose closing releases the lock.

    ``wait=False`` raises :class:`BlockingIOError` at once when another process holds it. Any
    other ``OSError`` (a filesystem without locks, such as some network mounts) propagates,
    with nothing left open.
    """
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd
