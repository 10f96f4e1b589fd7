"""Training checkpoints: what they hold, an exact resume, and files that are not checkpoints."""

from pathlib import Path

import pytest
import torch

from artifacts.storage import CorruptFileError
from training.checkpoint import load_checkpoint
from training.train import main

DESIGN_KEYS = {"epoch", "global_step", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
               "rng_states", "best_metric", "history", "config"}


def test_checkpoint_has_the_design_keys_and_loads_weights_only(tiny_config):
    result = main(tiny_config(publish=False))
    path = result.run_dir / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    assert DESIGN_KEYS <= set(state)
    assert set(state["rng_states"]) == {"python", "numpy", "torch", "cuda"}
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert state["config"]["optimizer"] == "adam"
    assert (result.run_dir / "checkpoints" / "best.pt").is_file()


def test_resume_continues_bit_identically(tiny_config):
    """3 epochs straight == 2 epochs, stop, resume from last.pt to 3 (dropout + augmentation on)."""
    common = dict(epochs=3, model_kwargs={"hidden": [32], "dropout": 0.2}, scheduler="onecycle",
                  augment="crop-flip", publish=False)
    straight = main(tiny_config(run_name="straight", **common))
    # Stop after two of three epochs: the interrupted run's config still says 3 epochs, so its
    # schedule is the same; patience=0 would change the history, so cut the epoch loop instead.
    interrupted_cfg = tiny_config(run_name="interrupted", **common)
    _run_epochs(interrupted_cfg, 2)
    last = Path(interrupted_cfg.runs_dir) / "interrupted" / "checkpoints" / "last.pt"
    resumed = main(tiny_config(resume=str(last), **common))
    a = torch.load(straight.run_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert b["epoch"] == 2
    for key, tensor in a["model_state_dict"].items():
        assert torch.equal(tensor, b["model_state_dict"][key]), key
    assert a["history"][2]["val_loss"] == b["history"][2]["val_loss"]


def _run_epochs(cfg, epochs_before_crash: int) -> None:
    """Run ``cfg`` and kill it (an exception) right after epoch ``epochs_before_crash`` saved."""
    import training.train as train_module

    real_save = train_module.save_checkpoint
    saves = {"n": 0}

    def crash_after(path, state):
        real_save(path, state)
        if path.name == "last.pt":
            saves["n"] += 1
            if saves["n"] == epochs_before_crash:
                raise KeyboardInterrupt("simulated kill")

    train_module.save_checkpoint = crash_after
    try:
        with pytest.raises(KeyboardInterrupt):
            main(cfg)
    finally:
        train_module.save_checkpoint = real_save


def test_truncated_checkpoint_gives_a_clear_error(tiny_config, tmp_path):
    result = main(tiny_config(publish=False))
    data = (result.run_dir / "checkpoints" / "last.pt").read_bytes()
    broken = tmp_path / "truncated.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated.pt is not a loadable"):
        load_checkpoint(broken)


def test_tampered_checkpoint_with_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"epoch": Payload()}, path)
    with pytest.raises(CorruptFileError, match="weights-only"):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(CorruptFileError, match="lacks"):
        load_checkpoint(path)


def test_early_stopping_stops_after_patience_epochs_without_gain(tiny_config):
    # lr=0: nothing improves after the first epoch, so patience=2 stops after epoch 3 of 10.
    result = main(tiny_config(epochs=10, lr=0.0, scheduler="none", optimizer="sgd", patience=2, publish=False))
    assert result.epochs_run == 3
    state = torch.load(result.run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert state["epoch"] == 0
