"""The whole retraining loop on the real Fashion-MNIST: drift, feedback, retrain, recovery.

1. Production v1 is trained on the data as shipped (``python -m training train --promote``) and
   served by the real gunicorn service (2 workers).
2. Live traffic shifts: the test images arrive colour-inverted (``--shift invert``: white
   background, dark garment) or rotated by 90 degrees (``--shift rotate``). The drift gauge
   (``imgclf_prediction_drift_psi``) and the served accuracy on shifted images are read before
   and after the shift.
3. ``--feedback`` shifted *training* images (never the test images scored below) are labelled
   through ``POST /feedback``, as clients correcting predictions would.
4. One ``python -m training schedule --once`` (the default gate: margin, per-class drop, golden
   set) trains on the dataset plus the feedback store, and promotes; the service hot-reloads.
5. Old and new version are scored through HTTP on the same shifted and original test images.

    python bench/drift_recovery.py [--shift invert] [--feedback 2000] [--model wide_cnn]
                                   [--epochs 2] [--eval-images 10000]

Needs the real Fashion-MNIST (Debian's /usr/share/datasets/fashion-mnist or --data-dir);
says so and stops without it. Results: docs/retraining.md.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, Server  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from training.data.sources import (  # noqa: E402
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_LABELS,
    IDX_FILES,
    find_idx_dir,
    read_idx,
)

NAME = "fashion-mnist"
TOKEN = "drift-bench-token"
BATCH = 32  # images per request


def shifted(images: np.ndarray, shift: str) -> np.ndarray:
    if shift == "invert":
        return 255 - images
    if shift == "rotate":
        return np.rot90(images, k=1, axes=(1, 2)).copy()
    raise ValueError(shift)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def files(images: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.png", png(image), "image/png")) for i, image in enumerate(images)]


def served_accuracy(client: httpx.Client, images: np.ndarray, labels: np.ndarray) -> tuple[float, set[str]]:
    """Top-1 accuracy of what the service answers for ``images``, and the versions that answered."""
    correct, versions = 0, set()
    for start in range(0, len(images), BATCH):
        response = client.post("/predict", files=files(images[start:start + BATCH]))
        response.raise_for_status()
        body = response.json()
        versions.add(body["version"])
        predicted = [p["label"] for p in body["predictions"]]
        truth = [FASHION_MNIST_LABELS[i] for i in labels[start:start + BATCH]]
        correct += sum(p == t for p, t in zip(predicted, truth, strict=True))
    return correct / len(images), versions


def drift_gauge(client: httpx.Client, images: np.ndarray, labels: np.ndarray) -> float:
    """The drift gauge of the version serving ``images``' traffic (the largest over the live
    workers). A worker writes its gauge at most every 0.5 s, at a batch, so a few more
    requests of the same traffic go first."""
    time.sleep(0.6)
    _, versions = served_accuracy(client, images[:8 * BATCH], labels[:8 * BATCH])
    values = [sample.value
              for family in text_string_to_metric_families(client.get("/metrics").text)
              for sample in family.samples if sample.name == "imgclf_prediction_drift_psi"
              and sample.labels.get("version") in versions]
    values = [v for v in values if v == v]  # NaN: a version no longer served
    return max(values) if values else float("nan")


def send_feedback(client: httpx.Client, images: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for label in range(len(FASHION_MNIST_LABELS)):
        chosen = images[labels == label]
        for start in range(0, len(chosen), BATCH):
            response = client.post("/feedback", files=files(chosen[start:start + BATCH]),
                                   data={"label": FASHION_MNIST_LABELS[label]},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code not in (200, 201):
                raise RuntimeError(f"/feedback answered {response.status_code}: {response.text}")
    return statuses


def wait_for_version(client: httpx.Client, version: str, timeout: float = 120) -> None:
    deadline, seen = time.monotonic() + timeout, 0
    while seen < 6:  # several answers in a row: every worker swapped
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not serve version {version} within {timeout} s")
        body = client.get("/health/ready").json()
        seen = seen + 1 if body.get("models", {}).get(NAME) == version else 0
        time.sleep(0.3)


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "ab") as out:
        process = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({process.returncode}); see {log}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shift", choices=("invert", "rotate"), default="invert")
    parser.add_argument("--feedback", type=int, default=2000, help="shifted training images labelled")
    parser.add_argument("--model", default="wide_cnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=10000, help="test images scored per kind")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the registry, runs and logs here")
    args = parser.parse_args()

    data_dir = find_idx_dir(args.data_dir or DEBIAN_FASHION_MNIST, "FashionMNIST")
    if data_dir is None:
        print(f"the real Fashion-MNIST is missing ({args.data_dir or DEBIAN_FASHION_MNIST}): install "
              "Debian's dataset-fashion-mnist or pass --data-dir")
        return 2
    idx = {split: [next(data_dir.glob(stem + "*")) for stem in stems] for split, stems in IDX_FILES.items()}
    train_images, train_labels = (read_idx(p) for p in idx["train"])
    test_images, test_labels = (read_idx(p)[:args.eval_images] for p in idx["test"])
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(train_images), size=args.feedback, replace=False)
    feedback_images, feedback_labels = shifted(train_images[chosen], args.shift), train_labels[chosen]
    shifted_test = shifted(test_images, args.shift)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="drift-recovery-"))
    work.mkdir(parents=True, exist_ok=True)
    reg, runs, store, log = work / "registry", work / "runs", work / "feedback", work / "log.txt"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TRAIN_", "SCHEDULE_"))},
           "PYTHONPATH": str(REPO)}
    recipe = ["--model", args.model, "--epochs", str(args.epochs), "--data-dir", str(data_dir)]
    print(f"work directory {work}; {args.model}, {args.epochs} epoch(s); shift {args.shift}", flush=True)

    seconds_v1 = run([sys.executable, "-m", "training", "train", *recipe, "--registry", str(reg),
                      "--runs-dir", str(runs), "--name", NAME, "--promote", "--no-progress"], env, log)
    print(f"v1 trained in {seconds_v1:.0f} s", flush=True)
    server = Server(reg, NAME, work / "gunicorn.log", FEEDBACK_TOKEN=TOKEN, FEEDBACK_DIR=str(store),
                    RELOAD_INTERVAL_S="1", DRIFT_WINDOW="2000", LOG_LEVEL="info")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            old_original, _ = served_accuracy(client, test_images, test_labels)
            psi_before = drift_gauge(client, test_images, test_labels)
            old_shifted, _ = served_accuracy(client, shifted_test, test_labels)
            psi_shifted = drift_gauge(client, shifted_test, test_labels)
            print(f"v1: original {old_original:.4f}, shifted {old_shifted:.4f}; PSI {psi_before:.3f} -> "
                  f"{psi_shifted:.3f}", flush=True)
            statuses = send_feedback(client, feedback_images, feedback_labels)
            job_env = {**env, "MODEL_REGISTRY": str(reg), "MODEL_NAME": NAME, "SCHEDULE_RUNS_DIR": str(runs),
                       "TRAIN_MODEL": args.model, "TRAIN_EPOCHS": str(args.epochs),
                       "TRAIN_DATA_DIR": str(data_dir), "TRAIN_FEEDBACK_DIR": str(store)}
            seconds_run = run([sys.executable, "-m", "training", "schedule", "--once"], job_env, log)
            report = json.loads(sorted((reg / NAME / "reports").glob("*.json"))[-1].read_text())
            print(f"scheduled run: {report['status']} in {seconds_run:.0f} s: {report['reason']}", flush=True)
            new_version = report["production"]["version_after"]
            if report["status"] == "promoted":
                wait_for_version(client, new_version)
            new_shifted, _ = served_accuracy(client, shifted_test, test_labels)
            psi_recovered = drift_gauge(client, shifted_test, test_labels)
            new_original, versions = served_accuracy(client, test_images, test_labels)
    finally:
        server.stop()

    gate = report.get("gate") or {}
    print()
    print(f"| {args.shift} shift, {args.model} {args.epochs} epoch(s) | v1 (shipped data) | "
          f"v{new_version} (+ feedback) |")
    print("|---|---|---|")
    print(f"| served accuracy, shifted test images ({len(test_images)}) | {old_shifted:.4f} | {new_shifted:.4f} |")
    print(f"| served accuracy, original test images ({len(test_images)}) | {old_original:.4f} | "
          f"{new_original:.4f} |")
    print(f"| drift gauge (PSI): original traffic -> shifted traffic | {psi_before:.3f} -> {psi_shifted:.3f} | "
          f"shifted: {psi_recovered:.3f} |")
    print(f"| feedback images labelled (requests by status) | {args.feedback} ({statuses}) | |")
    print(f"| run: status, new samples, time | {report['status']}, {report['data']['new_samples']}, "
          f"{seconds_run:.0f} s | |")
    print(f"| gate: worst class change | {_worst(gate)} | |")
    print(f"\nrecovered {_share(old_shifted, new_shifted, old_original):.0%} of the accuracy lost on "
          f"shifted images; original split {100 * (new_original - old_original):+.2f} points; "
          f"versions that answered at the end: {sorted(versions)}")
    return 0 if report["status"] == "promoted" else 1


def _worst(gate: dict) -> str:
    classes = gate.get("classes") or {}
    if not classes:
        return "n/a"
    label, row = min(classes.items(), key=lambda item: item[1]["change"])
    return f"{label} {row['change']:+.4f} (limit {gate['max_class_drop']})"


def _share(old_shifted: float, new_shifted: float, original: float) -> float:
    lost = original - old_shifted
    return (new_shifted - old_shifted) / lost if lost > 0 else 0.0


if __name__ == "__main__":
    sys.exit(main())
