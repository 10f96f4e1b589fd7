"""What travels with a published version: the report and its pictures, the golden set, the data
fingerprint and manifest, the drift reference; and how a load refuses them tampered with."""

import json

import pytest
import torch
from PIL import Image

from artifacts import registry
from artifacts.golden import GOLDEN_FILE, MIN_MARGIN, GoldenSet
from artifacts.metadata import read_metadata
from artifacts.registry import ArtifactValidationError
from training.train import main


@pytest.fixture
def published(tiny_config):
    cfg = tiny_config()
    result = main(cfg)
    return cfg, result, registry.model_dir(cfg.registry, "fashion-mnist") / result.version


def test_a_version_carries_its_report_golden_set_and_data(published):
    cfg, result, version_dir = published
    metadata = read_metadata(version_dir)
    assert set(metadata["files"]) == {"report.json", "confusion.png", "reliability.png",
                                      "mistakes.png", GOLDEN_FILE, "dataset.json"}
    report = json.loads(registry.read_verified(version_dir, metadata, "report.json"))
    assert report["accuracy"] == pytest.approx(result.test_metrics["test_accuracy"], abs=1e-6)
    assert set(report["classes"]) == set(metadata["class_labels"])
    assert report == result.report
    for picture in registry.REPORT_PICTURES:
        with Image.open(version_dir / f"{picture}.png") as image:
            assert image.format == "PNG" and image.width > 100
    share = metadata["prediction_reference"]["class_share"]
    assert sum(share.values()) == pytest.approx(1.0, abs=1e-5)
    assert [record["epoch"] for record in metadata["history"]] == [1, 2]  # tiny_config: 2 epochs
    assert {"train_loss", "val_accuracy", "lr"} <= set(metadata["history"][0])
    data = metadata["data"]
    assert data["fingerprint"]["sources"]["fashion-mnist"]["files"]  # the idx files' hashes
    assert sum(data["counts"]["fashion-mnist"]["test"].values()) == result.test_metrics["test_samples"]


def test_the_golden_set_is_what_the_model_computes_and_is_decided(published):
    _, _, version_dir = published
    artifact = registry.load_artifact(version_dir.parent.parent, "fashion-mnist", version_dir.name)
    golden = artifact.golden
    assert golden is not None and 0 < len(golden.images) <= 32
    assert golden.images.dtype == torch.uint8 and golden.images.shape[1:] == (1, 28, 28)
    top2 = golden.probabilities.topk(2, dim=1).values
    assert ((top2[:, 0] - top2[:, 1]) >= MIN_MARGIN / 4).all()  # no rounding can flip a top-1
    # loadable with nothing but torch, weights_only
    content = torch.load(version_dir / GOLDEN_FILE, weights_only=True)
    assert set(content) == {"images", "labels", "probabilities"}


def test_a_tampered_golden_set_is_refused_by_its_hash(published):
    _, _, version_dir = published
    path = version_dir / GOLDEN_FILE
    golden = GoldenSet.from_bytes(path.read_bytes())
    images = golden.images.clone()
    images[0] ^= 0xFF
    path.write_bytes(GoldenSet(images, golden.probabilities, golden.labels).to_bytes())
    with pytest.raises(ArtifactValidationError, match="golden.pt sha256 .* does not match"):
        registry.load_artifact(version_dir.parent.parent, "fashion-mnist", version_dir.name)


def test_weights_that_do_not_reproduce_their_golden_set_are_refused(published):
    """A golden set whose hash is right but whose probabilities are not what the weights give
    (another model's, or weights altered with their hash updated) fails the load."""
    _, _, version_dir = published
    reg = version_dir.parent.parent
    artifact = registry.load_artifact(reg, "fashion-mnist", version_dir.name)
    golden = artifact.golden
    shifted = golden.probabilities.roll(1, dims=1)  # every top-1 moves to another class
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    version = registry.publish(reg, metadata, artifact.model.state_dict(), files={
        GOLDEN_FILE: GoldenSet(golden.images, shifted, golden.labels).to_bytes()})
    with pytest.raises(ArtifactValidationError, match="fails its golden set: top-1 differs"):
        registry.load_artifact(reg, "fashion-mnist", version)
