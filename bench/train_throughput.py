"""Training throughput: this project's pipeline vs the seeds' loop, same MLP, same machine, same run.

The seeds' loop: torchvision ``FashionMNIST`` with ``ToTensor()`` per sample, ``DataLoader``
batch 64, the 784-512-512-10 MLP, SGD, ``loss.item()`` every batch. This pipeline: the idx
files decoded once into a uint8 tensor, ``training.data.batches.BatchLoader`` (whole-batch gather
and, in one extra row, crop augmentation), ``EvalTransform`` normalisation and ``training.engine.train_one_epoch``
with the precision ``auto`` picks. Then one row per named recipe (``--recipe standard|long``):
its whole training step (model, batch size, augmentation, mixing, weight average) on
``--recipe-samples`` images, the figure that tells what an epoch of each costs. Rounds
alternate between contenders so that noise from a shared machine hits all alike; the table
reports medians and their ratio to the seeds' loop.

    python bench/train_throughput.py [--data-dir DIR] [--rounds 3] [--samples 20000] [--recipe-samples 10000]

Uses the real Fashion-MNIST (Debian's /usr/share/datasets/fashion-mnist, or --data-dir in
Debian or torchvision layout); without it, generated images of the same shape, and says so.
"""

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets as tv_datasets
from torchvision.transforms import ToTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from artifacts.preprocess import EvalTransform, InputSpec  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data.batches import BatchAugment, BatchLoader, build_augment, channel_mean_std  # noqa: E402
from training.data.mixing import build_mixing  # noqa: E402
from training.data.sources import DEBIAN_FASHION_MNIST, IDX_FILES, find_idx_dir, load_idx_split  # noqa: E402
from training.ema import WeightAverage  # noqa: E402
from training.engine import (
    resolve_runtime,  # noqa: E402
    train_one_epoch,  # noqa: E402
)
from training.optim import build_optimizer, warmup_epochs  # noqa: E402
from training.recipes import RECIPE_NAMES, with_recipe  # noqa: E402


def torchvision_root(data_dir: Path | None, workdir: Path) -> tuple[Path, str]:
    """A root in torchvision's layout (what the seeds' loop reads) and a description of the data."""
    source = find_idx_dir(data_dir, "FashionMNIST") if data_dir else find_idx_dir(DEBIAN_FASHION_MNIST, "FashionMNIST")
    raw = workdir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    if source is None:
        rng = np.random.default_rng(0)
        for (images, labels), count in ((IDX_FILES["train"], 60000), (IDX_FILES["test"], 10000)):
            pixels = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8).tobytes()
            targets = rng.integers(0, 10, count, dtype=np.uint8).tobytes()
            shape = b"".join(d.to_bytes(4, "big") for d in (count, 28, 28))
            (raw / images).write_bytes(bytes([0, 0, 8, 3]) + shape + pixels)
            (raw / labels).write_bytes(bytes([0, 0, 8, 1]) + count.to_bytes(4, "big") + targets)
        return workdir, "GENERATED images (real Fashion-MNIST not found: apt-get install dataset-fashion-mnist)"
    for pair in IDX_FILES.values():
        for stem in pair:
            src = source / stem if (source / stem).exists() else source / f"{stem}.gz"
            with (gzip.open(src) if src.suffix == ".gz" else open(src, "rb")) as fin, open(raw / stem, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return workdir, f"real Fashion-MNIST from {source}"


def new_mlp() -> nn.Module:
    return models.build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28))


def seed_loop(root: Path, samples: int) -> float:
    """The seeds' loop, verbatim in spirit; returns samples/s."""
    dataset = tv_datasets.FashionMNIST(str(root), train=True, download=False, transform=ToTensor())
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    model, loss_fn = new_mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    seen, started = 0, time.perf_counter()
    for images, labels in loader:
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        seen += len(labels)
        if seen >= samples:
            break
    return seen / (time.perf_counter() - started)


def pipeline(train: torch.Tensor, labels: torch.Tensor, spec: InputSpec, batch_size: int, samples: int,
             precision: str, augment: bool = False) -> float:
    """This project's training path on the decoded tensors; returns samples/s."""
    from training.data.sources import ImageTensors

    data = ImageTensors(train[:samples], labels[:samples])
    cfg = TrainConfig(model="mlp", optimizer="sgd", lr=1e-3, momentum=0.0, weight_decay=0.0)
    model = new_mlp()
    runtime = resolve_runtime(device="cpu", precision=precision, channels_last=False)
    loader = BatchLoader(data, batch_size=batch_size, shuffle=True, seed=0,
                         augment=BatchAugment(padding=2, flip=False) if augment else None)
    started = time.perf_counter()
    train_one_epoch(model, loader, optimizer=build_optimizer(model.parameters(), cfg),
                    criterion=nn.CrossEntropyLoss(), transform=EvalTransform(spec=spec), runtime=runtime)
    return len(data) / (time.perf_counter() - started)


def recipe_pipeline(train: torch.Tensor, labels: torch.Tensor, spec: InputSpec, samples: int,
                    cfg: TrainConfig) -> float:
    """One epoch of a whole recipe's training step (its model, batch size, augmentation,
    mixing and weight average, as training.train builds them) on ``samples`` images; samples/s."""
    from training.data.sources import ImageTensors

    data = ImageTensors(train[:samples], labels[:samples])
    model = models.build_model(cfg.model, num_classes=10, in_channels=1, image_size=(28, 28), **cfg.model_kwargs)
    runtime = resolve_runtime(device="cpu", precision=cfg.precision, channels_last=True)
    model = model.to(memory_format=torch.channels_last) if runtime.channels_last else model
    loader = BatchLoader(data, batch_size=cfg.batch_size, shuffle=True, seed=0, augment=build_augment(cfg))
    ema = WeightAverage(model, cfg, world_size=1, steps_per_epoch=len(loader),
                        warmup_epochs=warmup_epochs(cfg)) if cfg.ema else None
    started = time.perf_counter()
    train_one_epoch(model, loader, optimizer=build_optimizer(model.parameters(), cfg),
                    criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
                    transform=EvalTransform(spec=spec), runtime=runtime, mixing=build_mixing(cfg, 10), ema=ema)
    return len(data) / (time.perf_counter() - started)


def recipe_config(name: str, overrides: dict | None = None) -> TrainConfig:
    defaults = asdict(TrainConfig())
    return TrainConfig(**with_recipe(defaults, {"recipe": name, **(overrides or {})}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20000, help="training samples per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--recipe-samples", type=int, default=10000,
                        help="training samples per measurement of the recipe rows (wide_cnn is slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root, described = torchvision_root(args.data_dir, Path(tmp))
        started = time.perf_counter()
        decoded = load_idx_split(root / "FashionMNIST" / "raw", "train")  # (60000, 1, 28, 28) uint8
        decode_s = time.perf_counter() - started
        mean, std = channel_mean_std(decoded.images)
        spec = InputSpec(channels=1, height=28, width=28, mean=mean, std=std)
        contenders = {
            "seeds' loop (ToTensor per sample, DataLoader b64, fp32)": lambda: seed_loop(root, args.samples),
            "pipeline b64 fp32 (same batch and precision)": lambda: pipeline(
                decoded.images, decoded.labels, spec, 64, args.samples, "fp32"),
            "pipeline b256 precision=auto (recommended)": lambda: pipeline(
                decoded.images, decoded.labels, spec, 256, args.samples, "auto"),
            "pipeline b1024 precision=auto": lambda: pipeline(
                decoded.images, decoded.labels, spec, 1024, args.samples, "auto"),
            "pipeline b256 precision=auto + crop augmentation": lambda: pipeline(
                decoded.images, decoded.labels, spec, 256, args.samples, "auto", augment=True),
        }
        # each named recipe's training step, as `python -m training train --recipe NAME` runs it
        # (demo's is standard's, for one epoch)
        recipes = {f"recipe {name}": recipe_config(name) for name in RECIPE_NAMES if name != "demo"}
        for name, cfg in recipes.items():
            contenders[name] = lambda cfg=cfg: recipe_pipeline(decoded.images, decoded.labels, spec,
                                                               args.recipe_samples, cfg)
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                run()  # warm-up pass is cheap relative to the measurement, and evens out caches
                results[name].append(run())

    baseline = statistics.median(results[next(iter(results))])
    print(f"data: {described}; decoded once into a uint8 tensor in {decode_s:.2f}s")
    print(f"threads: {args.threads}; samples per measurement: {args.samples}; rounds: {args.rounds} (median)")
    print(f"{'contender':58} {'samples/s':>10} {'vs seeds':>9}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:58} {median:10.0f} {median / baseline:8.1f}x")


if __name__ == "__main__":
    main()
