"""The training configuration: checks at construction, and what a resumed run may change."""

import pytest

from training.config import TrainConfig, check_resume_config


def test_patience_below_one_is_refused():
    with pytest.raises(ValueError, match="patience must be at least 1"):
        TrainConfig(patience=0)


def test_resume_refuses_changes_to_data_model_optimizer_or_schedule():
    saved = TrainConfig(scheduler="cosine", epochs=2).to_dict()
    resumed = TrainConfig(scheduler="cosine", epochs=4, lr=0.5, seed=1, resume="last.pt")
    with pytest.raises(ValueError, match="--epochs 2 -> 4.*--lr 0.1 -> 0.5.*--seed 0 -> 1"):
        check_resume_config(saved, resumed)


def test_resume_allows_runtime_early_stopping_and_epochs_of_a_length_free_schedule():
    for scheduler in ("none", "step"):
        saved = TrainConfig(scheduler=scheduler, epochs=2).to_dict()
        check_resume_config(saved, TrainConfig(scheduler=scheduler, epochs=4, patience=2, min_delta=0.01,
                                               device="cpu", threads=1, publish=False, resume="last.pt"))
