"""The command line as a user runs it: a real subprocess on tiny generated data."""

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support import REPO
from support.images import band_images

from artifacts import production, registry
from artifacts.metadata import read_metadata
from training.cli import build_parser, main
from training.train import main as train_main

TRAIN = [sys.executable, "-m", "training", "train"]
COMMANDS = ("train", "predict", "versions", "promote", "rollback", "report", "export", "summary", "schedule")


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
    images, _ = band_images(2, classes=10, seed=5)
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


# --- the registry commands: versions, promote, rollback (real tiny artifacts, in process)


@pytest.fixture
def published(tiny_config) -> Path:
    """A registry holding two real versions of ``fm``, each promoted in turn: production is 2,
    and 1 is where a rollback goes."""
    for seed in (0, 1):
        train_main(tiny_config(name="fm", epochs=1, seed=seed, promote=True))
    return Path(tiny_config().registry)


def cli(*args: str, registry: Path) -> int:
    return main([*args, "--registry", str(registry), "--name", "fm"])


def test_versions_lists_accuracy_date_and_production(published, capsys):
    assert cli("versions", registry=published) == 0
    header, first, second = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["VERSION", "TEST_ACCURACY", "CREATED_AT"]
    accuracy = read_metadata(published / "fm" / "1")["metrics"]["test_accuracy"]
    assert first.split()[:2] == ["1", f"{accuracy:.4f}"] and not first.endswith("production")
    assert second.split()[0] == "2" and second.endswith("production")


def test_rollback_and_promote_move_production_and_say_so(published, capsys):
    assert cli("rollback", registry=published) == 0
    assert capsys.readouterr().out.strip() == "production: 2 -> 1"
    assert registry.read_production(published, "fm") == "1"
    assert cli("promote", "2", registry=published) == 0
    assert capsys.readouterr().out.strip() == "production: 1 -> 2"
    assert production.production_history(published, "fm") == ["1", "2"]  # the one history


def test_registry_refusals_exit_1_with_one_line_and_leave_production(published, caplog, capsys):
    assert cli("promote", "7", registry=published) == 1
    assert "version 7 is not published; published versions: 1, 2" in caplog.text
    assert cli("rollback", registry=published) == 0
    assert cli("rollback", registry=published) == 1  # back at the first production: nowhere to go
    assert "no previous production version" in caplog.text
    assert registry.read_production(published, "fm") == "1"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("\n" not in r.getMessage() for r in errors)


def test_promote_refuses_a_tampered_artifact_without_a_traceback(published, tmp_path):
    with open(published / "fm" / "1" / "weights.pt", "ab") as weights:
        weights.write(b"tampered")
    proc = run([sys.executable, "-m", "training", "promote", "1", "--registry", str(published),
                "--name", "fm"], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "weights.pt sha256" in proc.stderr and "modified or truncated" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert registry.read_production(published, "fm") == "2"  # a failed check moves nothing


# --- predict's errors name the resolved path and the fix


def test_predict_outside_the_repository_names_the_missing_registry(tmp_path):
    proc = run([sys.executable, "-m", "training", "predict", "shirt.png"], tmp_path)
    assert proc.returncode == 2
    assert f"no model registry at {(tmp_path / 'registry').resolve()}" in proc.stderr
    assert "--registry DIR" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_predict_on_a_file_that_is_not_an_image_names_it(published, tmp_path, caplog):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert cli("predict", str(text), registry=published) == 2
    assert f"{text.resolve()} is not an image Pillow can read" in caplog.text
    assert cli("predict", str(tmp_path / "absent.png"), registry=published) == 2
    assert f"{(tmp_path / 'absent.png').resolve()} is not a file" in caplog.text


# --- the config line and the help


def test_config_line_shows_the_input_the_model_sees(tiny_config, caplog):
    with caplog.at_level(logging.INFO, logger="training"):
        train_main(tiny_config(epochs=1, publish=False))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("config: "))
    assert "'input': '1x28x28'" in line  # the fake Fashion-MNIST is 28x28 grayscale
    for absent in ("'image_size'", "'channels'", "'momentum'", "'step_size'"):  # imagefolder, sgd, step
        assert absent not in line
    assert "'betas'" in line  # tiny_config trains with adam


def test_help_lists_the_commands_and_imports_no_torch():
    """--help must answer at once: nothing it runs may import torch, PIL or numpy (4 s)."""
    code = (
        "import contextlib, io, sys\n"
        "from training.cli import main\n"
        "for argv in (['--help'], *([c, '--help'] for c in sys.argv[1:])):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    print(out.getvalue())\n"
        "print('HEAVY', sorted({'torch', 'torchvision', 'PIL', 'numpy'} & set(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
    top = proc.stdout.split("usage: python -m training ", 2)[1]
    assert "``" not in top and "Train image classifiers" in top
    for command in COMMANDS:
        assert re.search(rf"^ +{command} +\w", top, re.MULTILINE), command  # with its one-line help


def test_every_option_has_help_and_shows_its_default_once():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subparsers.choices) == sorted(COMMANDS)
    for command, child in [("", parser), *subparsers.choices.items()]:
        formatter = child._get_formatter()
        for action in child._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (command, action.dest)
            shown = " ".join(formatter._format_action(action).split())
            mentions = shown.lower().count("default")
            assert mentions <= 1, (command, shown)
            plain_flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
            meaningful = action.default not in (None, argparse.SUPPRESS) and not plain_flag
            if meaningful and action.option_strings:
                assert mentions == 1, (command, shown)
