"""The training recipe of the tests: trains in about a second on fake idx data."""

from pathlib import Path

from training.config import TrainConfig


def tiny_train_config(data_dir: Path, root: Path, **overrides) -> TrainConfig:
    """A 32-unit MLP on the fake Fashion-MNIST in ``data_dir`` (``support.idx.make_idx_dir``):
    2 epochs of Adam, fp32 on the CPU, no progress bar; runs and registry below ``root``."""
    values = dict(
        dataset="fashion-mnist", data_dir=str(data_dir), model="mlp", model_kwargs={"hidden": [32]},
        epochs=2, batch_size=32, optimizer="adam", lr=1e-2, precision="fp32", device="cpu",
        runs_dir=str(root / "runs"), registry=str(root / "registry"), run_name="run",
        progress=False, seed=0,
    )
    return TrainConfig(**(values | overrides))
