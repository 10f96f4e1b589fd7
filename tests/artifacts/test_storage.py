"""Atomic writes (``artifacts.storage``): a write that fails midway leaves the previous file."""

import errno
import io

import pytest
import torch

from artifacts import storage


def test_disk_full_midway_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    storage.atomic_torch_save({"version": torch.tensor([1])}, path)
    before = path.read_bytes()

    def full_disk(obj, handle):
        handle.write(b"partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        storage.atomic_torch_save({"version": torch.tensor([2])}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(io.BytesIO(before), weights_only=True)["version"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
