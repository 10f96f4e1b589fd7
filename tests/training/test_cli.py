"""The command line as a user runs it: a real subprocess on tiny generated data."""

import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import synthetic_images

TRAIN = [sys.executable, "-m", "training", "train"]


def run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=180)


def test_train_publishes_promotes_and_prints_test_accuracy_last(idx_dir, tmp_path):
    proc = run(TRAIN + ["--dataset", "fashion-mnist", "--data-dir", str(idx_dir), "--model", "cnn",
                        "--epochs", "2", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05",
                        "--seed", "1", "--runs-dir", "runs", "--registry", "reg", "--name", "fm",
                        "--promote"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test_accuracy=") and 0.0 <= float(last.split("=")[1]) <= 1.0
    assert (tmp_path / "reg" / "fm" / "production").read_text().strip() == "1"
    assert (tmp_path / "reg" / "fm" / "1" / "weights.pt").is_file()
    assert list((tmp_path / "runs").glob("fm-*/tensorboard/events.out.tfevents.*"))
    assert "epoch 2/2" in proc.stderr  # one summary line per epoch

    # the published model then classifies image files, and summarises itself
    images, _ = synthetic_images(2, classes=10, seed=5)
    files = []
    for i, pixels in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(files[-1])
    predicted = run([sys.executable, "-m", "training", "predict", "--registry", "reg", "--name", "fm",
                     *map(str, files)], tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.count("Predicted: ") == 2
    summary = run([sys.executable, "-m", "training", "summary", "--registry", "reg", "--name", "fm"], tmp_path)
    assert "Conv2d" in summary.stdout and "Total params" in summary.stdout


def test_unknown_optimizer_fails_at_once_listing_choices(tmp_path):
    proc = run(TRAIN + ["--optimizer", "adamax"], tmp_path)
    assert proc.returncode == 2
    assert "invalid choice: 'adamax'" in proc.stderr and "rmsprop" in proc.stderr


def test_missing_dataset_fails_with_an_actionable_message(tmp_path):
    proc = run(TRAIN + ["--data-dir", str(tmp_path / "none")], tmp_path)
    assert proc.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_from_a_corrupt_checkpoint_fails_cleanly(idx_dir, tmp_path):
    bad = Path(tmp_path / "run" / "checkpoints" / "last.pt")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    proc = run(TRAIN + ["--data-dir", str(idx_dir), "--model", "mlp", "--resume", str(bad)], tmp_path)
    assert proc.returncode == 2
    assert "not a loadable weights-only torch file" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_with_only_the_checkpoint_continues_that_run(idx_dir, tmp_path):
    first = run(TRAIN + ["--data-dir", str(idx_dir), "--model", "mlp", "--model-kwargs", '{"hidden": [16]}',
                         "--epochs", "1", "--scheduler", "none", "--run-name", "r", "--precision", "fp32",
                         "--no-publish"], tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run(TRAIN + ["--resume", "runs/r/checkpoints/last.pt", "--epochs", "2", "--no-publish"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "'model': 'mlp'" in resumed.stderr and "epoch 2/2" in resumed.stderr
    assert "epoch 1/2" not in resumed.stderr  # epoch 1 came from the checkpoint


def test_resume_refuses_options_that_would_change_the_run_before_training(idx_dir, tmp_path):
    first = run(TRAIN + ["--data-dir", str(idx_dir), "--model", "mlp", "--model-kwargs", '{"hidden": [16]}',
                         "--epochs", "1", "--batch-size", "32", "--scheduler", "onecycle", "--run-name", "r",
                         "--precision", "fp32", "--no-publish"], tmp_path)
    assert first.returncode == 0, first.stderr
    last = "runs/r/checkpoints/last.pt"
    # onecycle is laid out over the run's total steps; its saved state cannot be stretched
    refused = run(TRAIN + ["--resume", last, "--epochs", "2", "--batch-size", "64", "--no-publish"], tmp_path)
    assert refused.returncode == 2
    assert "--epochs" in refused.stderr and "--batch-size" in refused.stderr
    assert "Traceback" not in refused.stderr and "runtime:" not in refused.stderr  # nothing started
    # runtime and early-stopping options may change; repeating the checkpoint's value is fine
    allowed = run(TRAIN + ["--resume", last, "--patience", "3", "--threads", "1", "--batch-size", "32",
                           "--no-publish"], tmp_path)
    assert allowed.returncode == 0, allowed.stderr
