"""Run-to-run noise of per-class recall: what ``SCHEDULE_MAX_CLASS_DROP`` must tolerate.

The retraining gate refuses a candidate whose recall on any class falls more than
``SCHEDULE_MAX_CLASS_DROP`` below production's on the same test split. Two runs of the same
recipe on the same data differ only by their seed, so the recall drops between them are pure
noise: a limit below them would refuse good candidates at random. This trains the recipe with
``--seeds`` seeds on the real Fashion-MNIST and prints, per class, the recalls, their spread and
the largest drop between any two runs (what a same-quality candidate can show against
production), and the largest over all classes.

    python bench/class_noise.py [--seeds 4] [--model wide_cnn] [--epochs 1] [--data-dir DIR]

Uses the real Fashion-MNIST (Debian's /usr/share/datasets/fashion-mnist or --data-dir) and
says so when it is missing. Results: docs/retraining.md.
"""

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import TrainConfig  # noqa: E402
from training.data.sources import DEBIAN_FASHION_MNIST, DatasetNotFoundError  # noqa: E402
from training.report.metrics import class_recalls  # noqa: E402
from training.train import main as train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--model", default="wide_cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    recalls: list[dict[str, float]] = []
    accuracies: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            cfg = TrainConfig(model=args.model, epochs=args.epochs, seed=seed, progress=False,
                              data_dir=str(args.data_dir) if args.data_dir else None,
                              runs_dir=f"{work}/runs", registry=f"{work}/registry", publish=False)
            try:
                result = train(cfg)
            except DatasetNotFoundError as exc:
                print(f"the real Fashion-MNIST is missing ({DEBIAN_FASHION_MNIST}): {exc}")
                return 2
            recalls.append(class_recalls(result.report))
            accuracies.append(result.test_metrics["test_accuracy"])
            print(f"seed {seed}: test accuracy {accuracies[-1]:.4f} "
                  f"({time.perf_counter() - started:.0f} s so far)", flush=True)
    print(f"\n{args.model}, {args.epochs} epoch(s), {args.seeds} seeds, Fashion-MNIST test split "
          f"(1,000 images per class); accuracy {min(accuracies):.4f}-{max(accuracies):.4f}\n")
    print(f"{'class':<14}{'min':>8}{'max':>8}{'stdev':>8}{'largest drop':>14}")
    worst = 0.0
    for label in recalls[0]:
        values = [r[label] for r in recalls]
        drop = max(abs(a - b) for a, b in itertools.combinations(values, 2))
        worst = max(worst, drop)
        print(f"{label:<14}{min(values):>8.4f}{max(values):>8.4f}{statistics.stdev(values):>8.4f}"
              f"{drop:>14.4f}")
    print(f"\nlargest drop between two seeds over all classes: {worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
