"""The production pointer and its promotion history (artifacts.production): promote, rollback,
repair, the lock."""

import logging
import shutil
from pathlib import Path

import pytest

from artifacts import locks, production, registry
from artifacts.metadata import METADATA_FILE
from artifacts.registry import RegistryError

NAME = "fmnist"


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    for version in ("1", "2", "3"):  # promote() only needs a published version's metadata file
        folder = tmp_path / NAME / version
        folder.mkdir(parents=True)
        (folder / METADATA_FILE).write_text("{}")
    return tmp_path


def _promote(reg: Path, *versions: str) -> None:
    for version in versions:
        production.promote(reg, NAME, version)


def test_rolling_back_twice_steps_back_twice_then_stops(reg):
    _promote(reg, "1", "2", "3")
    assert production.rollback(reg, NAME) == "2"
    assert production.rollback(reg, NAME) == "1"  # not back to 3
    assert registry.read_production(reg, NAME) == "1"
    with pytest.raises(RegistryError, match="no previous production"):
        production.rollback(reg, NAME)


def test_promoting_after_a_rollback_starts_a_new_step(reg):
    _promote(reg, "1", "2", "3")
    production.rollback(reg, NAME)  # production 2, history 1 -> 2
    _promote(reg, "3")
    assert production.previous_production(reg, NAME) == "2"


def test_promoting_the_current_version_changes_nothing(reg):
    _promote(reg, "1", "2", "2")
    log_lines = (reg / NAME / production.PROMOTIONS_LOG).read_text().splitlines()
    assert len(log_lines) == 2
    assert production.previous_production(reg, NAME) == "1"  # not "2", which would be a no-op


def test_an_invalid_pointer_is_repaired_by_promote_and_does_not_block_rollback(reg):
    _promote(reg, "1", "2")
    (reg / NAME / registry.POINTER_FILE).write_text("v2\n")  # hand-edited
    with pytest.raises(RegistryError, match="invalid version"):
        registry.read_production(reg, NAME)
    assert production.previous_production(reg, NAME) == "2"  # the last logged production
    _promote(reg, "3")
    assert registry.read_production(reg, NAME) == "3"


def test_a_promotions_log_that_cannot_be_appended_keeps_the_promotion(reg, caplog):
    _promote(reg, "1")
    log_path = reg / NAME / production.PROMOTIONS_LOG
    log_path.unlink()
    log_path.mkdir()  # appending now fails with IsADirectoryError
    with caplog.at_level(logging.ERROR, logger="artifacts.registry"):
        _promote(reg, "2")
    assert registry.read_production(reg, NAME) == "2"
    assert "rollback will not know this step" in caplog.text


def test_steps_missing_from_the_log_are_filled_in_from_what_each_line_replaced(reg):
    (reg / NAME / registry.POINTER_FILE).write_text("1\n")  # production before any log
    _promote(reg, "2")
    assert production.previous_production(reg, NAME) == "1"


def test_rollback_skips_versions_that_were_pruned(reg):
    _promote(reg, "1", "2", "3")
    shutil.rmtree(reg / NAME / "2")  # as prune_versions removes it
    assert production.rollback(reg, NAME) == "1"
    with pytest.raises(RegistryError, match="no previous production"):
        production.rollback(reg, NAME)


def test_a_pointer_that_is_not_text_is_an_invalid_pointer(reg):
    _promote(reg, "1")
    (reg / NAME / registry.POINTER_FILE).write_bytes(b"\xff\xfe\n")
    with pytest.raises(RegistryError, match="not text"):
        registry.read_production(reg, NAME)
    _promote(reg, "2")  # repairs it
    assert registry.read_production(reg, NAME) == "2"


def test_a_rollback_waits_for_whoever_holds_the_production_lock(reg):
    """Another process (a gunicorn worker, the scheduled job) deciding a change holds the lock:
    a rollback must not read the history until it has written its pointer."""
    import threading
    import time

    _promote(reg, "1", "2")
    done = threading.Event()
    with production.ProductionLock(reg, NAME):
        worker = threading.Thread(target=lambda: (production.rollback(reg, NAME), done.set()))
        worker.start()
        time.sleep(0.2)
        assert not done.is_set()  # waiting for the lock
        production.promote(reg, NAME, "3")  # the holder's change lands first
    worker.join(timeout=10)
    assert done.is_set() and registry.read_production(reg, NAME) == "2"  # stepped back from 3


def test_the_production_lock_of_an_unknown_model_is_a_registry_error(tmp_path):
    with pytest.raises(RegistryError, match="not in the registry"), \
            production.ProductionLock(tmp_path, "nothing"):
        pass


def test_a_filesystem_without_locks_still_allows_rollback(reg, monkeypatch, caplog):
    import errno

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    _promote(reg, "1", "2")
    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="artifacts.production"):
        assert production.rollback(reg, NAME) == "1"
    assert "cannot lock the registry" in caplog.text
