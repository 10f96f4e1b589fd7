"""Data-parallel scaling: training samples/s with 1 vs N torchrun processes on this machine.

Each configuration runs ``python -m training train`` for real under ``torchrun --standalone``
(threads per process = cores / processes, so every run uses the same cores), and the figure is
the per-epoch ``samples/s`` the training loop logs (summed over ranks). Rounds alternate.

    python bench/ddp_scaling.py [--model wide_cnn] [--epochs 1] [--processes 1 2] [--rounds 2]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"epoch \d+/\d+ .* (\d+) samples/s")


def run(processes: int, args: argparse.Namespace, workdir: Path) -> float:
    threads = max(1, (os.cpu_count() or 1) // processes)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "training", "train", "--model", args.model, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--threads", str(threads), "--no-publish", "--no-progress",
               "--runs-dir", str(workdir / "runs"), "--registry", str(workdir / "registry")]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{proc.stderr[-2000:]}")
    rates = [float(m.group(1)) for m in RATE.finditer(proc.stderr)]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wide_cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="per process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, help="default: the training CLI's (Debian's Fashion-MNIST)")
    args = parser.parse_args()
    results: dict[int, list[float]] = {n: [] for n in args.processes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for n in args.processes:
                results[n].append(run(n, args, Path(tmp)))
    base = statistics.median(results[args.processes[0]])
    print(f"model {args.model}, batch {args.batch_size} per process, {os.cpu_count()} cores shared by all processes")
    print(f"{'processes':>9} {'samples/s':>10} {'speed-up':>9}")
    for n, values in results.items():
        print(f"{n:>9} {statistics.median(values):10.0f} {statistics.median(values) / base:8.2f}x")


if __name__ == "__main__":
    main()
