"""The training configuration: checks at construction, and what a resumed run may change."""

import pytest
import torch

from training.config import TrainConfig, check_resume_config
from training.train import main


def test_patience_below_one_is_refused():
    with pytest.raises(ValueError, match="patience must be at least 1"):
        TrainConfig(patience=0)


def test_resume_refuses_changes_to_data_model_optimizer_or_schedule():
    saved = TrainConfig(scheduler="cosine", epochs=2).to_dict()
    resumed = TrainConfig(scheduler="cosine", epochs=4, lr=0.5, seed=1, resume="last.pt")
    with pytest.raises(ValueError, match="--epochs 2 -> 4.*--lr 0.1 -> 0.5.*--seed 0 -> 1"):
        check_resume_config(saved, resumed)


@pytest.mark.parametrize("scheduler", ["none", "step"])
def test_resume_applies_new_runtime_early_stopping_and_epochs_of_a_length_free_schedule(
        tiny_config, scheduler):
    """A run of 2 epochs resumed with --epochs 4 (and the runtime options spelled out) goes on
    at epoch 3 and ends where a run of 4 epochs ends, weights and history alike; resumed again
    with a patience its history has already run out of, it stops before training at all."""
    common = dict(scheduler=scheduler, step_size=1, gamma=0.5, publish=False)
    straight = main(tiny_config(run_name="straight", epochs=4, **common))
    first = main(tiny_config(run_name="first", epochs=2, **common))
    last = first.run_dir / "checkpoints" / "last.pt"
    before = torch.load(last, weights_only=True)

    resumed = main(tiny_config(resume=str(last), epochs=4, device="cpu", threads=1, **common))
    after = torch.load(last, weights_only=True)
    expected = torch.load(straight.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert resumed.run_dir == first.run_dir
    assert resumed.epochs_run == 4
    assert (after["epoch"], after["global_step"]) == (3, expected["global_step"])
    assert after["global_step"] == 2 * before["global_step"]  # 2 more epochs of steps
    assert after["history"][:2] == before["history"]  # the first two epochs are not run again
    assert [h["epoch"] for h in after["history"]] == [1, 2, 3, 4]
    for key in ("val_loss", "val_accuracy", "lr"):
        assert [h[key] for h in after["history"]] == [h[key] for h in expected["history"]], key
    for key, tensor in expected["model_state_dict"].items():
        assert torch.equal(tensor, after["model_state_dict"][key]), key
    assert (after["config"]["epochs"], after["config"]["threads"]) == (4, 1)

    # No epoch gains 1.0 in accuracy: with patience 1 the history has run out of patience.
    stopped = main(tiny_config(resume=str(last), epochs=6, patience=1, min_delta=1.0, **common))
    assert stopped.epochs_run == 4
    assert torch.load(last, weights_only=True)["epoch"] == 3  # nothing trained, nothing saved
