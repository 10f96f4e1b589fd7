"""Changing production: the pointer ``registry/<model>/production`` (read by
:func:`artifacts.registry.read_production`) and its history ``promotions.log``, which rollback
walks back through; the lock that serialises changes across processes; and pruning, which
must spare the versions rollback can reach."""

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from artifacts.locks import open_locked
from artifacts.registry import (
    EXPORTS_DIR,
    METADATA_FILE,
    POINTER_FILE,
    RegistryError,
    list_versions,
    model_dir,
    read_production,
    validate_version,
)
from artifacts.storage import atomic_write_bytes, fsync_dir, remove_tree

log = logging.getLogger(__name__)

PROMOTIONS_LOG = "promotions.log"
T = TypeVar("T")


def promote(registry: Path, name: str, version: str, *, rollback: bool = False) -> None:
    """Point production at ``version`` (atomic rewrite) and append it to the promotions log,
    the history :func:`previous_production` reads (``rollback`` marks a step back in it).

    A pointer that does not name a valid version is overwritten (promoting is how it gets
    repaired). Promoting the version that is already production changes nothing.
    """
    validate_version(version)
    directory = model_dir(registry, name)
    if not (directory / version / METADATA_FILE).is_file():
        raise RegistryError(f"cannot promote {name} version {version}: it is not published")
    try:
        previous = read_production(registry, name)
    except RegistryError as exc:
        log.warning("%s: replacing an invalid production pointer (%s)", name, exc)
        previous = None
    if previous == version:
        return
    atomic_write_bytes(directory / POINTER_FILE, f"{version}\n".encode())
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = {"at": stamp, "version": version, "previous": previous}
    if rollback:
        entry["rollback"] = True
    try:
        with open(directory / PROMOTIONS_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
    except OSError as exc:  # the pointer, which decides what serves, is already rewritten
        log.error("%s: production is now version %s, but %s could not be appended (%s): "
                  "rollback will not know this step", name, version, PROMOTIONS_LOG, exc)
    log.info("%s %s version %s (was %s)", "rolled back" if rollback else "promoted", name,
             version, previous)


def production_history(registry: Path, name: str) -> list[str]:
    """The versions production went through, the latest last, as the promotions log tells
    it: a promotion pushes its version, a rollback pops the version it stepped back from.
    So rolling back twice goes two steps back, not back and forth. Each line also names the
    version it replaced, which fills in steps the log lacks (a pointer written by hand, a
    line that could not be appended)."""
    try:
        lines = (model_dir(registry, name) / PROMOTIONS_LOG).read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    history: list[str] = []
    for line in lines:
        try:
            entry = json.loads(line)
            version = validate_version(str(entry["version"]))
            previous = entry.get("previous")
            previous = None if previous is None else validate_version(str(previous))
        except (json.JSONDecodeError, TypeError, KeyError, RegistryError):
            continue  # a torn or hand-edited line
        if entry.get("rollback"):
            if history and history[-1] == previous:
                history.pop()
        elif previous is not None and (not history or history[-1] != previous):
            history.append(previous)
        if not history or history[-1] != version:
            history.append(version)
    return history


def previous_production(registry: Path, name: str) -> str | None:
    """The rollback target: the latest version before the current one in the production
    history that is still published (pruning may have removed older ones)."""
    try:
        current = read_production(registry, name)
    except RegistryError:
        current = None  # an invalid pointer: the last logged production is the way back
    directory = model_dir(registry, name)
    for version in reversed(production_history(registry, name)):
        if version != current and (directory / version / METADATA_FILE).is_file():
            return version
    return None


class ProductionLock:
    """Serialises read-decide-write changes of a model's production pointer across processes
    (gunicorn workers answering admin calls, the scheduled job): an exclusive ``flock`` on the
    model's directory. Locking needs no write access, so a read-only registry locks too (its
    writes then fail on their own). Plain :func:`promote` does not lock; callers that read
    the pointer or history before writing it hold this around both."""

    def __init__(self, registry: Path, name: str) -> None:
        self._directory = model_dir(registry, name)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._fd = open_locked(self._directory, os.O_RDONLY | os.O_DIRECTORY, wait=True)
        except FileNotFoundError:
            raise RegistryError(f"{self._directory.name} is not in the registry") from None
        except OSError as exc:  # a filesystem without locks (some network mounts)
            log.warning("%s: cannot lock the registry (%s); changing production unlocked",
                        self._directory.name, exc)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> "ProductionLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def switch_production(registry: Path, name: str, version: str | None = None, *,
                      check: Callable[[str], T] | None = None) -> tuple[str, T | None]:
    """Make ``version`` production, or with ``None`` roll back to the previous production
    version; returns the version and what ``check`` returned for it.

    The one implementation behind ``python -m training promote|rollback`` and the service's
    admin endpoints. Under :class:`ProductionLock` (so two rollbacks at once step back twice,
    not to the same version): choose the version, ``check`` it (the CLI verifies the artifact,
    the service loads it for serving), and only then rewrite the pointer, so a version that
    fails its check never becomes production.
    """
    with ProductionLock(registry, name):
        if version is None:
            target = previous_production(registry, name)
            if target is None:
                raise RegistryError(f"{name} has no previous production version to roll back to")
        else:
            target = validate_version(version)
            if not (model_dir(registry, name) / target / METADATA_FILE).is_file():
                published = ", ".join(list_versions(registry, name)) or "none"
                raise RegistryError(f"{name} version {target} is not published; published "
                                    f"versions: {published}")
        checked = check(target) if check is not None else None
        promote(registry, name, target, rollback=version is None)
    return target, checked


def rollback(registry: Path, name: str) -> str:
    """Promote the previous production version again; returns it."""
    return switch_production(registry, name)[0]


def prune_versions(registry: Path, name: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions of ``name``; returns the removed versions.

    The production version and the previous production version (the rollback target) are
    never removed, however old. Each version is first renamed to a hidden name, so readers see
    it either complete or gone, never half-deleted. Its exports (``exports/<version>``, written
    by ``python -m training export``) go with it, and so do the exports of versions already gone.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    versions = list_versions(registry, name)
    protected = {read_production(registry, name), previous_production(registry, name)} - {None}
    kept = set(versions[-keep:]) | protected
    directory = model_dir(registry, name)
    removed = []
    for version in versions:
        if version in kept:
            continue
        remove_tree(directory / version)
        removed.append(version)
    exports = directory / EXPORTS_DIR
    if exports.is_dir():
        for export in exports.iterdir():  # hidden names are locks and an export's staging
            if export.is_dir() and export.name.isdigit() and not (directory / export.name).is_dir():
                with export_lock(registry, name, export.name):  # not while it is being written
                    remove_tree(export)
        fsync_dir(exports)
    if removed:
        fsync_dir(directory)
        log.info("pruned %s versions %s (kept %s)", name, ", ".join(removed),
                 ", ".join(sorted(kept, key=int)))
    return removed


@contextmanager
def export_lock(registry: Path, name: str, version: str) -> Iterator[None]:
    """Hold the flock that serialises writing (``python -m training export``) and pruning
    ``exports/<version>``: on a sibling file, ``exports/.<version>.lock``, since the directory
    itself is swapped whole."""
    exports = model_dir(registry, name) / EXPORTS_DIR
    exports.mkdir(parents=True, exist_ok=True)
    fd = open_locked(exports / f".{validate_version(version)}.lock", os.O_RDWR | os.O_CREAT, wait=True)
    try:
        yield
    finally:
        os.close(fd)
