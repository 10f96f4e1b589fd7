"""``python -m training report [VERSION]``: the per-class table of a published version's
report.json, read through the sha256 check; refusals exit 1 with one line."""

import json
import logging
from pathlib import Path

import pytest
import torch

import models
from artifacts import production, registry
from artifacts.metadata import build_metadata
from artifacts.preprocess import InputSpec
from training.cli import main
from training.report.metrics import build_report, format_class_table

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPEC = InputSpec(channels=1, height=28, width=28, mean=(0.286,), std=(0.353,))


def fake_report(seed: int) -> dict:
    """The report of a fairly good fake model on 1000 samples (100 per class)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat(100)
    logits = torch.randn(1000, 10, generator=generator) * 1.5
    logits[torch.arange(1000), labels] += 3.0
    return build_report(logits.softmax(dim=1), labels, LABELS)


def publish(reg: Path, report: dict | None) -> str:
    """A tiny real artifact (an untrained MLP), with ``report`` as its report.json."""
    model = models.build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28), hidden=[8])
    metadata = build_metadata(
        name="fm", architecture="mlp", architecture_kwargs={"hidden": [8]}, class_labels=LABELS,
        input_spec=SPEC, metrics={"test_accuracy": (report or {}).get("accuracy", 0.1)},
        dataset="fashion-mnist", config={})
    files = {"report.json": json.dumps(report, indent=2).encode()} if report is not None else {}
    return registry.publish(reg, metadata, model.state_dict(), files=files)


@pytest.fixture
def reg(tmp_path) -> Path:
    """fm versions 1 (report A, production), 2 (report B) and 3 (published without a report)."""
    reg = tmp_path / "registry"
    assert [publish(reg, fake_report(0)), publish(reg, fake_report(1)), publish(reg, None)] == ["1", "2", "3"]
    production.promote(reg, "fm", "1")
    return reg


def report_cli(*args: str, reg: Path) -> int:
    return main(["report", *args, "--registry", str(reg), "--name", "fm"])


def test_report_prints_the_class_table_of_the_version_asked_for(reg, capsys):
    assert report_cli("2", reg=reg) == 0
    header, *table = capsys.readouterr().out.rstrip("\n").splitlines()
    assert header == "fm version 2: test split"
    assert "\n".join(table) == format_class_table(fake_report(1))
    assert table[0].split() == ["class", "precision", "recall", "F1", "support"]
    assert [line.split()[0] for line in table[1:11]] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle"]


@pytest.mark.parametrize("version", [[], ["production"]])
def test_report_without_a_version_or_production_shows_production(reg, capsys, version):
    assert report_cli(*version, reg=reg) == 0
    header, *table = capsys.readouterr().out.rstrip("\n").splitlines()
    assert header == "fm version 1 (production): test split"
    assert "\n".join(table) == format_class_table(fake_report(0))


def test_report_json_prints_the_published_file(reg, capsys):
    assert report_cli("1", "--json", reg=reg) == 0
    assert json.loads(capsys.readouterr().out) == fake_report(0)


def test_a_tampered_report_is_refused_by_sha256(reg, capsys, caplog):
    path = reg / "fm" / "2" / "report.json"
    report = json.loads(path.read_text())
    report["classes"]["Shirt"]["recall"] = 0.99  # a better-looking Shirt class
    path.write_text(json.dumps(report, indent=2))
    for args in (["2"], ["2", "--json"]):
        assert report_cli(*args, reg=reg) == 1
        assert capsys.readouterr().out == ""
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("sha256" in e and "report.json" in e for e in errors)


def test_a_version_published_before_reports_says_so(reg, capsys, caplog):
    assert report_cli("3", reg=reg) == 1
    assert capsys.readouterr().out == ""
    assert "fm version 3 has no report.json: it was published before reports existed" in caplog.text


def test_an_unknown_version_lists_the_published_ones(reg, caplog):
    assert report_cli("9", reg=reg) == 1
    assert "fm version 9 is not published; published versions: 1, 2, 3" in caplog.text
    assert report_cli("latest", reg=reg) == 1
    assert "invalid version 'latest'" in caplog.text


def test_no_production_version_asks_for_a_version(tmp_path, caplog):
    reg = tmp_path / "registry"
    publish(reg, fake_report(0))
    assert report_cli(reg=reg) == 1
    assert "fm has no production version" in caplog.text and "name a version" in caplog.text


def test_a_missing_registry_is_a_usage_error(tmp_path, caplog):
    assert report_cli("1", reg=tmp_path / "nowhere") == 2
    assert "no model registry" in caplog.text


def test_a_report_this_code_cannot_read_is_refused_and_json_still_shows_it(tmp_path, capsys, caplog):
    reg = tmp_path / "registry"
    version = publish(reg, {"samples": 3, "format": "from the future"})
    assert report_cli(version, reg=reg) == 1
    assert "is not a report this code can read" in caplog.text and "--json" in caplog.text
    capsys.readouterr()
    assert report_cli(version, "--json", reg=reg) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "from the future"
