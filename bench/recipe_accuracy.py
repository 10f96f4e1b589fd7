"""What a recipe reaches and what it costs: ``python -m training train`` run as a user runs it,
once per seed, on the real Fashion-MNIST; wall time, test accuracy and the validation curve.

    python bench/recipe_accuracy.py [--recipe standard] [--seeds 0 1 2] [--data-dir DIR] [-- TRAIN OPTIONS]

Each run is the whole command (start-up, data decoding, every epoch, the test evaluation and
publishing into a throw-away registry), timed from outside, one at a time, so the minutes are
what a user waits. Prints one row per seed, the spread, and the validation accuracy against
minutes of each run (from the per-epoch log lines), the curve to read when a goal is missed.
Without the real data it says so and stops: accuracy on generated images means nothing.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.data.sources import DEBIAN_FASHION_MNIST, find_idx_dir  # noqa: E402

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) .* val_acc=([0-9.]+) .*?([0-9.]+)s(?:  \*best\*)?$")
TEST_LINE = re.compile(r"^test_accuracy=([0-9.]+)$", re.MULTILINE)


def run_once(recipe: str, seed: int, data_dir: Path | None, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "training", "train", "--recipe", recipe, "--seed", str(seed),
                   "--registry", f"{tmp}/registry", "--runs-dir", f"{tmp}/runs", "--no-progress",
                   *(["--data-dir", str(data_dir)] if data_dir else []), *extra]
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        minutes = (time.perf_counter() - started) / 60
    if proc.returncode != 0:
        sys.exit(f"seed {seed}: training failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    curve, elapsed = [], 0.0
    for line in proc.stderr.splitlines():
        if match := EPOCH_LINE.search(line):
            elapsed += float(match[4]) / 60
            curve.append((int(match[1]), elapsed, float(match[3])))
    return {"seed": seed, "minutes": minutes, "test": float(TEST_LINE.search(proc.stdout)[1]), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="standard")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("train_options", nargs=argparse.REMAINDER, help="after --: more train options")
    args = parser.parse_args()
    extra = [option for option in args.train_options if option != "--"]
    if find_idx_dir(args.data_dir or DEBIAN_FASHION_MNIST, "FashionMNIST") is None:
        sys.exit("the real Fashion-MNIST is not here (apt-get install dataset-fashion-mnist, or --data-dir): "
                 "nothing measured")

    runs = []
    for seed in args.seeds:
        runs.append(run_once(args.recipe, seed, args.data_dir, extra))
        print(f"seed {seed}: {runs[-1]['test']:.2%} in {runs[-1]['minutes']:.1f} min", flush=True)

    tests, minutes = [r["test"] for r in runs], [r["minutes"] for r in runs]
    print(f"\nrecipe {args.recipe} {' '.join(extra)}".rstrip())
    print(f"{'seed':>4} {'minutes':>8} {'test accuracy':>14}")
    for run in runs:
        print(f"{run['seed']:>4} {run['minutes']:8.1f} {run['test']:14.2%}")
    spread = f" (min {min(tests):.2%}, max {max(tests):.2%})" if len(tests) > 1 else ""
    print(f"mean {statistics.mean(minutes):8.1f} {statistics.mean(tests):14.2%}{spread}")
    print("\nvalidation accuracy against minutes of training (epoch: minutes, accuracy)")
    for run in runs:
        points = "  ".join(f"{epoch}: {at:.1f} {accuracy:.2%}" for epoch, at, accuracy in run["curve"])
        print(f"seed {run['seed']}: {points}")


if __name__ == "__main__":
    main()
