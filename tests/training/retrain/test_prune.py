"""Pruning of old registry versions and old run folders."""

from pathlib import Path

import pytest
from support.retrain import NAME, production, reports

from artifacts import registry
from artifacts.metadata import METADATA_FILE
from artifacts.production import promote, prune_versions
from training.retrain.loop import EXIT_OK, run_schedule
from training.retrain.run import prune_runs


def _fake_version(registry_dir: Path, version: str) -> None:
    folder = registry_dir / NAME / version
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text("{}")


def test_prune_keeps_newest_production_and_previous(tmp_path):
    for v in range(1, 9):
        _fake_version(tmp_path, str(v))
    promote(tmp_path, NAME, "2")
    promote(tmp_path, NAME, "3")  # production 3, previous 2
    removed = prune_versions(tmp_path, NAME, keep=3)
    assert removed == ["1", "4", "5"]
    assert registry.list_versions(tmp_path, NAME) == ["2", "3", "6", "7", "8"]
    assert not [p for p in (tmp_path / NAME).iterdir() if p.name.startswith(".trash")]


def test_prune_rejects_keep_below_one(tmp_path):
    with pytest.raises(ValueError):
        prune_versions(tmp_path, NAME, keep=0)


def test_scheduled_runs_prune_old_versions_and_runs(job_env):
    job_env(SCHEDULE_KEEP_VERSIONS="2", SCHEDULE_KEEP_RUNS="2", SCHEDULE_PROMOTION_MARGIN="-1",
            TRAIN_EPOCHS="1")
    for _ in range(4):
        assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "4"
    assert registry.list_versions(job_env.registry, NAME) == ["3", "4"]
    assert len(list(job_env.runs.glob(f"{NAME}-retrain-*"))) == 2
    assert reports(job_env.registry)[-1]["pruned_versions"] == ["2"]


def test_prune_runs_ignores_runs_started_by_hand(tmp_path):
    for name in (f"{NAME}-retrain-1", f"{NAME}-retrain-2", f"{NAME}-retrain-3", "my-experiment"):
        (tmp_path / name).mkdir()
    assert prune_runs(tmp_path, NAME, keep=1) == [f"{NAME}-retrain-1", f"{NAME}-retrain-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-experiment", f"{NAME}-retrain-3"]
