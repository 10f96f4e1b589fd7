"""Scheduled runs end to end: promote, refuse, reject below the floor, crash, bad data, warm start,
and a tampered production model."""

import pytest
from PIL import Image
from support.images import make_imagefolder
from support.retrain import BAD, GOOD, NAME, production, reports

from artifacts import registry
from artifacts.production import previous_production, promote
from training.retrain.loop import EXIT_FAILED, EXIT_NO_MODEL, EXIT_OK, run_schedule


def test_first_run_promotes_and_writes_a_report(job_env):
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "1"
    (report,) = reports(job_env.registry)
    assert report["status"] == "promoted" and report["decision"] == "promote"
    assert report["production"]["version_before"] is None
    assert report["production"]["version_after"] == "1"
    assert report["candidate"]["version"] == "1"
    assert report["candidate"]["metrics"]["test_accuracy"] >= 0.9  # the patterns are easy
    assert report["durations"]["train_s"] > 0 and report["durations"]["total_s"] > 0
    assert report["recipe"]["model"] == "mlp"
    # the artifact is a normal registry artifact the service can load
    assert registry.load_artifact(job_env.registry, NAME).metadata["class_labels"] == [
        "checks", "hstripes", "vstripes"]


def test_worse_candidate_is_refused_and_production_kept(job_env):
    assert run_schedule(once=True) == EXIT_OK
    job_env(**BAD)
    assert run_schedule(once=True) == EXIT_OK  # a correct refusal is not a failure
    assert production(job_env.registry) == "1"
    first, second = reports(job_env.registry)
    assert second["status"] == "kept" and second["decision"] == "keep"
    assert second["candidate"]["version"] == "2"  # published for the record, never served
    prod = second["production"]
    assert prod["source"] == "re-evaluated" and prod["version"] == "1"
    # re-evaluated on the same split it reproduces its recorded test accuracy exactly
    assert prod["test_accuracy"] == pytest.approx(first["candidate"]["metrics"]["test_accuracy"])
    assert second["candidate"]["metrics"]["test_accuracy"] < prod["test_accuracy"]
    assert "< production" in second["reason"]


def test_better_candidate_is_promoted(job_env):
    job_env(**BAD)
    assert run_schedule(once=True) == EXIT_OK  # floor 0: even a poor first model is served
    assert production(job_env.registry) == "1"
    job_env(**GOOD)
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "2"
    assert previous_production(job_env.registry, NAME) == "1"
    last = reports(job_env.registry)[-1]
    assert last["status"] == "promoted"
    assert last["candidate"]["metrics"]["test_accuracy"] > last["production"]["test_accuracy"]


def test_first_candidate_below_the_floor_is_rejected(job_env):
    job_env(SCHEDULE_MIN_ACCURACY="0.99", **BAD)
    assert run_schedule(once=True) == EXIT_NO_MODEL
    assert production(job_env.registry) is None
    (report,) = reports(job_env.registry)
    assert report["status"] == "rejected" and "below the floor" in report["reason"]


def test_crash_mid_run_leaves_production_untouched(job_env, monkeypatch):
    assert run_schedule(once=True) == EXIT_OK
    pointer = job_env.registry / NAME / "production"
    before = pointer.read_bytes(), pointer.stat().st_mtime_ns
    import training.train

    real = training.train.train_one_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash: disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(training.train, "train_one_epoch", crash_in_second_epoch)
    assert run_schedule(once=True) == EXIT_FAILED
    assert (pointer.read_bytes(), pointer.stat().st_mtime_ns) == before
    assert registry.list_versions(job_env.registry, NAME) == ["1"]  # nothing half-published
    report = reports(job_env.registry)[-1]
    assert report["status"] == "failed" and report["decision"] == "keep"
    assert "disk on fire" in report["reason"] and "Traceback" in report["error"]["traceback"]
    # the lock was released: the next run goes ahead
    monkeypatch.setattr(training.train, "train_one_epoch", real)
    assert run_schedule(once=True) == EXIT_OK


def test_production_is_scored_on_the_candidates_test_split_while_data_arrives(job_env, tmp_path, monkeypatch):
    # No test/ folder: the test split is held out of train/, which grows while the candidate trains.
    data = make_imagefolder(tmp_path / "growing", splits={"train": 24})
    job_env(TRAIN_DATA_DIR=str(data))
    assert run_schedule(once=True) == EXIT_OK
    import training.train

    real_main = training.train.main

    def main_then_images_arrive(cfg, **kwargs):
        result = real_main(cfg, **kwargs)
        for i in range(20):  # some of them hash into the held-out test split
            Image.new("RGB", (16, 16), (i, i, i)).save(data / "train" / "circle" / f"arrived-{i}.png")
        return result

    monkeypatch.setattr(training.train, "main", main_then_images_arrive)
    assert run_schedule(once=True) == EXIT_OK
    last = reports(job_env.registry)[-1]
    assert last["production"]["source"] == "re-evaluated"
    assert last["production"]["test_samples"] == last["candidate"]["metrics"]["test_samples"]


def test_bad_data_fails_with_a_report(job_env, tmp_path):
    job_env(TRAIN_DATA_DIR=str(tmp_path / "missing"))
    assert run_schedule(once=True) == EXIT_FAILED
    (report,) = reports(job_env.registry)
    assert report["status"] == "failed" and "imagefolder needs --data-dir" in report["reason"]


def test_warm_start_initialises_from_production_weights(job_env):
    assert run_schedule(once=True) == EXIT_OK
    job_env(SCHEDULE_WARM_START="true", SCHEDULE_PROMOTION_MARGIN="-1", **BAD)
    assert run_schedule(once=True) == EXIT_OK
    last = reports(job_env.registry)[-1]
    weights = job_env.registry / NAME / "1" / "weights.pt"
    assert last["candidate"]["warm_start_from"] == str(weights)
    # with a learning rate of 1e-9 the candidate stays where it started: at production's level
    assert last["candidate"]["metrics"]["test_accuracy"] == pytest.approx(
        last["production"]["test_accuracy"])


def test_tampered_production_is_replaced_by_a_good_candidate(job_env):
    assert run_schedule(once=True) == EXIT_OK
    weights = job_env.registry / NAME / "1" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the service cannot load it
    job_env(SCHEDULE_WARM_START="true")
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "2"
    last = reports(job_env.registry)[-1]
    assert last["candidate"]["warm_start_from"] is None
    assert last["production"]["source"] == "unavailable"
    assert "no comparable production model" in last["reason"]


def test_an_operators_promotion_during_the_comparison_is_not_overwritten(job_env, monkeypatch):
    import training.retrain.run

    job_env(**BAD)
    assert run_schedule(once=True) == EXIT_OK  # v1 in production
    job_env(**GOOD, SCHEDULE_PROMOTION_MARGIN="1")
    assert run_schedule(once=True) == EXIT_OK  # v2 published, kept
    job_env(SCHEDULE_PROMOTION_MARGIN="0")
    real = training.retrain.run.score_production

    def operator_promotes_v2_meanwhile(*args, **kwargs):
        score = real(*args, **kwargs)
        promote(job_env.registry, NAME, "2")
        return score

    monkeypatch.setattr(training.retrain.run, "score_production", operator_promotes_v2_meanwhile)
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "2"  # the operator's choice stands
    last = reports(job_env.registry)[-1]
    assert last["status"] == "kept" and "changed from v1 to v2" in last["reason"]
