"""What a scheduled run learns from: it skips data production (or the last candidate kept out)
has already seen, trains when feedback arrives (and says how much is new), and refuses a
candidate that got worse on one class."""

import pytest
from support.feedback import stripe_feedback
from support.retrain import NAME, production, reports

from artifacts import registry
from artifacts.metadata import read_metadata
from training.retrain.compare import class_gate
from training.retrain.loop import EXIT_OK, run_schedule


def test_unchanged_data_is_skipped_new_feedback_is_learned_and_force_trains(job_env, tmp_path):
    store = tmp_path / "feedback"
    store.mkdir()
    job_env(SCHEDULE_FORCE="false", TRAIN_FEEDBACK_DIR=str(store))
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "1"

    assert run_schedule(once=True) == EXIT_OK  # nothing new: no training, no version
    skipped = reports(job_env.registry)[-1]
    assert skipped["status"] == "skipped" and skipped["decision"] == "keep"
    assert skipped["reason"].startswith("data unchanged")
    assert skipped["candidate"] is None and registry.list_versions(job_env.registry, NAME) == ["1"]
    assert skipped["data"]["fingerprint"] == skipped["data"]["production_fingerprint"]

    stripe_feedback(store, "hstripes", 30, pattern=0, seed=11)  # clients labelled 30 images
    assert run_schedule(once=True) == EXIT_OK
    learned = reports(job_env.registry)[-1]
    assert learned["status"] in ("promoted", "kept") and learned["candidate"]["version"] == "2"
    assert learned["data"]["new_samples"] == {"imagefolder": 0, "feedback": 30}
    assert set(learned["gate"]["classes"]) == {"checks", "hstripes", "vstripes"}  # kept or not
    assert learned["data"]["samples"]["feedback"] == 30
    metadata = read_metadata(job_env.registry / NAME / "2")
    counts = metadata["data"]["counts"]["feedback"]
    assert sum(sum(per_class.values()) for per_class in counts.values()) == 30
    assert metadata["data"]["fingerprint"]["sources"]["feedback"]["samples"] == 30

    if learned["status"] == "promoted":  # v2 saw the feedback: the next run has nothing new
        assert run_schedule(once=True) == EXIT_OK
        assert reports(job_env.registry)[-1]["status"] == "skipped"
    assert run_schedule(once=True, force=True) == EXIT_OK  # --force trains anyway
    forced = reports(job_env.registry)[-1]
    assert forced["status"] != "skipped" and forced["policy"]["force"] is True


def test_a_candidate_that_regresses_one_class_is_refused_by_name(job_env, tmp_path):
    store = tmp_path / "feedback"
    store.mkdir()
    job_env(TRAIN_FEEDBACK_DIR=str(store))
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "1"
    # Poisoned feedback: vertical stripes labelled as horizontal ones, more than the real ones.
    stripe_feedback(store, "hstripes", 80, pattern=1, seed=12)
    job_env(SCHEDULE_PROMOTION_MARGIN="-1")  # overall accuracy alone would promote it
    assert run_schedule(once=True) == EXIT_OK
    assert production(job_env.registry) == "1"
    report = reports(job_env.registry)[-1]
    assert report["status"] == "kept"
    blocking = report["gate"]["blocking_class"]
    assert blocking["label"] == "vstripes"
    assert blocking["production"] - blocking["candidate"] > report["gate"]["max_class_drop"]
    assert "'vstripes' recall fell from" in report["reason"]
    assert set(report["gate"]["classes"]) == {"checks", "hstripes", "vstripes"}

    # Nothing new since: training again would publish the same candidate and keep it out again.
    job_env(SCHEDULE_FORCE="false")
    assert run_schedule(once=True) == EXIT_OK
    again = reports(job_env.registry)[-1]
    assert again["status"] == "skipped" and "v2's, the candidate the last run kept out" in again["reason"]
    assert registry.list_versions(job_env.registry, NAME) == ["1", "2"]


@pytest.mark.parametrize(("candidate", "blocked"), [
    ({"a": 0.90, "b": 0.80}, None),  # no drop
    ({"a": 0.87, "b": 0.80}, None),  # a drop of exactly the limit passes
    ({"a": 0.869, "b": 0.79}, "a"),  # the larger drop names the class
    ({"a": 0.95, "b": 0.70}, "b"),
])
def test_class_gate_names_the_class_that_fell_most(candidate, blocked):
    production_recalls = {"a": 0.90, "b": 0.80}
    blocking, table = class_gate(candidate, production_recalls, max_drop=0.03)
    assert (blocking or {}).get("label") == blocked
    assert table["a"]["production"] == 0.90 and table["b"]["candidate"] == candidate["b"]
