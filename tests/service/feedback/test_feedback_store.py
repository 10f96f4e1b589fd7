"""The feedback store (service.feedback.store): dedup, the label encoding, the log, atomic
all-or-nothing writes, and the two faults a store meets: a full disk and a read-only one.

Faults are real where the machine allows: as root, a tiny tmpfs fills up for real and a
read-only tmpfs refuses writes for real (root ignores chmod); as another user, chmod makes the
read-only directory. Where neither works, the read-only case falls back to a monkeypatched
EROFS and the full-disk filesystem test is skipped (the injected ENOSPC test still runs).
"""

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from artifacts import storage
from artifacts.feedback import iter_samples
from service.errors import FeedbackStoreFullError, FeedbackStoreUnavailableError, LabelConflictError
from service.feedback import store as store_module
from service.feedback.store import LOG_NAME, CheckedImage, FeedbackStore


def image(data: bytes, extension: str = "png") -> CheckedImage:
    return CheckedImage(data=data, sha256=hashlib.sha256(data).hexdigest(), extension=extension)


def add(store: FeedbackStore, label: str, *images: CheckedImage, request_id: str | None = None):
    return store.add(label, list(images), model="fmnist", version="3", request_id=request_id)


def files_under(root: Path) -> list[str]:
    """Every file below ``root`` (temp files included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def log_lines(root: Path) -> list[dict]:
    path = root / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class CannotMount(Exception):
    pass


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A real tmpfs mounted at ``path``, unmounted afterwards whatever happens; raises
    :class:`CannotMount` where this process may not mount (not root, no CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise CannotMount("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("mode=0755", *options)),
                             "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CannotMount(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ----------------------------------------------------------------------------- behaviour

def test_add_stores_a_new_image_once_and_reports_it_known_afterwards(tmp_path):
    store = FeedbackStore(tmp_path / "feedback")
    shoe = image(b"\x89PNG fake bytes: the store does not decode")
    assert [s.stored for s in add(store, "Sneaker", shoe)] == [True]
    assert [s.stored for s in add(store, "Sneaker", shoe)] == [False]
    assert files_under(store.root) == sorted([LOG_NAME, f"Sneaker/{shoe.sha256}.png"])
    assert (store.root / "Sneaker" / f"{shoe.sha256}.png").read_bytes() == shoe.data


def test_add_stores_an_image_repeated_within_one_request_once(tmp_path):
    store = FeedbackStore(tmp_path)
    a, b = image(b"a"), image(b"b")
    saved = add(store, "Bag", a, b, a)
    assert [(s.sha256, s.stored) for s in saved] == [(a.sha256, True), (b.sha256, True),
                                                      (a.sha256, False)]
    assert len(list(iter_samples(tmp_path))) == 2


def test_a_label_with_a_slash_round_trips_through_its_directory_name(tmp_path):
    store = FeedbackStore(tmp_path)
    shirt = image(b"shirt", "jpg")
    add(store, "T-shirt/top", shirt)
    assert (tmp_path / "T-shirt%2Ftop" / f"{shirt.sha256}.jpg").is_file()
    (sample,) = iter_samples(tmp_path)
    assert (sample.label, sample.sha256) == ("T-shirt/top", shirt.sha256)


def test_the_log_has_one_json_line_per_image_with_its_context(tmp_path):
    store = FeedbackStore(tmp_path)
    a, b = image(b"a"), image(b"b")
    add(store, "T-shirt/top", a, request_id="abc123")
    add(store, "T-shirt/top", a, b)
    first, again, second = log_lines(tmp_path)
    assert first["id"] == a.sha256 and first["label"] == "T-shirt/top"
    assert first["file"] == f"T-shirt%2Ftop/{a.sha256}.png"
    assert (first["model"], first["version"], first["request_id"]) == ("fmnist", "3", "abc123")
    assert first["stored"] is True and again["stored"] is False and second["stored"] is True
    assert "request_id" not in again and first["received_at"].endswith("+00:00")
    # a top-level file: the training reader never takes it for a sample
    assert [s.sha256 for s in iter_samples(tmp_path)] == sorted([a.sha256, b.sha256])


def test_the_same_image_under_another_label_is_refused_and_nothing_is_written(tmp_path):
    store = FeedbackStore(tmp_path)
    a, b = image(b"a"), image(b"b")
    add(store, "Sneaker", a)
    before = files_under(tmp_path)
    with pytest.raises(LabelConflictError, match="already stored with label 'Sneaker'"):
        add(store, "Sandal", b, a)
    assert files_under(tmp_path) == before and len(log_lines(tmp_path)) == 1


def test_concurrent_requests_each_log_whole_lines(tmp_path):
    store = FeedbackStore(tmp_path)
    images = [[image(f"{t}-{i}".encode()) for i in range(5)] for t in range(8)]
    threads = [threading.Thread(target=add, args=(store, "Coat", *batch)) for batch in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log_lines(tmp_path)) == 40 and len(list(iter_samples(tmp_path))) == 40


# ----------------------------------------------------------------------------- atomicity

def test_a_failed_write_leaves_no_partial_file_and_undoes_the_request(tmp_path, monkeypatch):
    """ENOSPC halfway through the second image's bytes (through the real atomic_write): no
    temp file, the first image of the request removed again, no log line, a 507 error."""
    store = FeedbackStore(tmp_path)
    kept = image(b"stored earlier")
    add(store, "Bag", kept)
    before = files_under(tmp_path)
    calls = []

    def half_then_full(path, data):
        calls.append(path)
        if len(calls) < 2:
            return storage.atomic_write_bytes(path, data)

        def write(handle):
            handle.write(data[: len(data) // 2])
            handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return storage.atomic_write(path, write)

    monkeypatch.setattr(store_module, "atomic_write_bytes", half_then_full)
    with pytest.raises(FeedbackStoreFullError, match="nothing was stored"):
        add(store, "Bag", image(b"first " * 100), image(b"second " * 100))
    assert len(calls) == 2
    assert files_under(tmp_path) == before
    assert [line["id"] for line in log_lines(tmp_path)] == [kept.sha256]


def test_a_short_log_write_is_cut_back_and_the_images_removed(tmp_path, monkeypatch):
    store = FeedbackStore(tmp_path)
    add(store, "Bag", image(b"earlier"))
    log_before = (tmp_path / LOG_NAME).read_bytes()
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, data[: len(data) // 3])

    monkeypatch.setattr(store_module.os, "write", short_write)
    with pytest.raises(FeedbackStoreFullError):
        add(store, "Bag", image(b"new"))
    monkeypatch.undo()
    assert (tmp_path / LOG_NAME).read_bytes() == log_before
    assert len(list(iter_samples(tmp_path))) == 1


def test_over_quota_is_a_full_store_too(tmp_path, monkeypatch):
    def over_quota(path, data):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(store_module, "atomic_write_bytes", over_quota)
    with pytest.raises(FeedbackStoreFullError, match="quota"):
        add(FeedbackStore(tmp_path), "Bag", image(b"x"))


# ----------------------------------------------------------------------------- real faults

def test_a_really_full_filesystem_answers_full_and_leaves_no_partial_file(tmp_path):
    """A 64 KiB tmpfs: the injected ENOSPC tests above cover the logic where it cannot mount."""
    with contextlib.ExitStack() as stack:
        try:
            root = stack.enter_context(tmpfs(tmp_path / "small", "size=64k"))
        except CannotMount as exc:
            pytest.skip(str(exc))
        store = FeedbackStore(root)
        small = image(b"small" * 10)
        add(store, "Bag", small)
        before = files_under(root)
        with pytest.raises(FeedbackStoreFullError, match="no space left on device"):
            add(store, "Bag", image(b"new and small"), image(os.urandom(200_000)))
        assert files_under(root) == before  # no temp file, the small new one undone
        assert [line["id"] for line in log_lines(root)] == [small.sha256]
        assert [s.stored for s in add(store, "Bag", image(b"fits"))] == [True]  # still usable


def test_a_read_only_store_is_unavailable_not_full(tmp_path, monkeypatch):
    """A read-only tmpfs as root (root ignores file modes), else a chmod 555 directory; only
    where neither refuses a write is EROFS injected."""
    root = tmp_path / "ro"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(tmpfs(root, "ro"))
            expected = "read-only file system"
        except CannotMount:
            root.chmod(0o555)
            stack.callback(root.chmod, 0o755)
            expected = "permission denied"
            if os.access(root, os.W_OK):  # root without mount rights ignores the mode
                def read_only(path, data):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS))
                monkeypatch.setattr(store_module, "atomic_write_bytes", read_only)
                expected = "read-only file system"
        with pytest.raises(FeedbackStoreUnavailableError, match=expected):
            add(FeedbackStore(root), "Bag", image(b"x"))
        assert files_under(root) == []


def test_a_store_whose_parent_cannot_be_created_is_unavailable(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(FeedbackStoreUnavailableError, match="not a directory"):
        add(FeedbackStore(tmp_path / "a-file" / "feedback"), "Bag", image(b"x"))
