import json

import pytest
import torch

from artifacts import production, registry
from artifacts.metadata import build_metadata
from artifacts.registry import ArtifactValidationError, RegistryError
from training.train import main


def test_published_artifact_holds_the_design_metadata(tiny_config):
    cfg = tiny_config(promote=True)
    result = main(cfg)
    version_dir = registry.model_dir(cfg.registry, "fashion-mnist") / result.version
    metadata = json.loads((version_dir / "metadata.json").read_text())
    for key in ("name", "version", "architecture", "architecture_kwargs", "class_labels", "input",
                "metrics", "dataset", "created_at", "weights_sha256", "config"):
        assert key in metadata, key
    assert metadata["input"]["channels"] == 1 and metadata["input"]["height"] == 28
    assert metadata["metrics"]["test_accuracy"] == result.test_metrics["test_accuracy"]
    state_dict = torch.load(version_dir / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state_dict.values())  # a state_dict, no module
    assert registry.read_production(cfg.registry, "fashion-mnist") == result.version


def test_loaded_artifact_reproduces_the_reported_test_accuracy(tiny_config):
    from artifacts.preprocess import EvalTransform
    from training.data.splits import load_data

    cfg = tiny_config()
    result = main(cfg)
    artifact = registry.load_artifact(cfg.registry, "fashion-mnist", result.version)
    test = load_data(cfg).test
    with torch.inference_mode():
        predictions = artifact.model(EvalTransform(spec=artifact.input_spec)(test.images)).argmax(1)
    accuracy = (predictions == test.labels).float().mean().item()
    assert accuracy == pytest.approx(result.test_metrics["test_accuracy"], abs=1e-6)


def test_versions_are_numbered_and_immutable(tiny_config):
    cfg = tiny_config()
    assert [main(cfg).version, main(cfg).version] == ["1", "2"]
    assert registry.list_versions(cfg.registry, "fashion-mnist") == ["1", "2"]


def test_failure_midway_through_publish_leaves_no_half_version(tiny_config, monkeypatch):
    cfg = tiny_config(publish=False)
    main(cfg)

    def boom(path):
        raise OSError("disk failed while hashing")

    monkeypatch.setattr(registry, "sha256_file", boom)
    with pytest.raises(OSError):
        registry.publish(cfg.registry, {"name": "fashion-mnist"}, {"w": torch.zeros(1)})
    directory = registry.model_dir(cfg.registry, "fashion-mnist")
    assert list(directory.iterdir()) == []  # no version, no staging directory


def test_tampered_weights_fail_the_sha256_check(tiny_config):
    cfg = tiny_config()
    version = main(cfg).version
    weights = registry.model_dir(cfg.registry, "fashion-mnist") / version / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactValidationError, match="sha256"):
        registry.load_artifact(cfg.registry, "fashion-mnist", version)


def test_promote_and_rollback_move_the_pointer(tiny_config):
    cfg = tiny_config(promote=True)
    main(cfg), main(cfg)
    assert registry.read_production(cfg.registry, "fashion-mnist") == "2"
    assert production.rollback(cfg.registry, "fashion-mnist") == "1"
    assert registry.read_production(cfg.registry, "fashion-mnist") == "1"
    with pytest.raises(RegistryError, match="not published"):
        production.promote(cfg.registry, "fashion-mnist", "9")


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "", "x" * 65, "name\x00"])
def test_model_names_cannot_escape_the_registry(name, tmp_path):
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.model_dir(tmp_path, name)


def _publish_untrained(reg, edit=None) -> str:
    """An untrained MLP, published; ``edit(metadata)`` then rewrites its metadata.json."""
    import models
    from artifacts.preprocess import InputSpec

    spec = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.5,))
    model = models.build_model("mlp", num_classes=3, in_channels=1, image_size=(28, 28))
    metadata = build_metadata(
        name="shapes", architecture="mlp", architecture_kwargs={}, class_labels=["a", "b", "c"],
        input_spec=spec, metrics={}, dataset="imagefolder", config={})
    version = registry.publish(reg, metadata, model.state_dict())
    if edit is not None:
        path = registry.model_dir(reg, "shapes") / version / "metadata.json"
        written = json.loads(path.read_text())
        edit(written)
        path.write_text(json.dumps(written))
    return version


MALFORMED = {  # hand-edited metadata.json files, each refused with a reason, never a crash
    "unknown_architecture_kwarg": (lambda m: m["architecture_kwargs"].update(bogus=1),
                                   "does not describe a model"),
    "input_without_mean": (lambda m: m["input"].pop("mean"), "does not describe a model"),
    "labels_null": (lambda m: m.update(class_labels=None), "does not describe a model"),
    "kwargs_not_an_object": (lambda m: m.update(architecture_kwargs=[]),
                             "does not describe a model"),
    "unknown_architecture": (lambda m: m.update(architecture="no-such-net"),
                             "does not describe a model"),
    "version_of_another_directory": (lambda m: m.update(version="7"), "copied by hand"),
    "name_of_another_model": (lambda m: m.update(name="other"), "copied by hand"),
    "metrics_null": (lambda m: m.update(metrics=None), "wrong type: metrics"),
    "dataset_a_number": (lambda m: m.update(dataset=5), "wrong type: dataset"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_metadata_is_refused_as_invalid(tmp_path, case):
    edit, reason = MALFORMED[case]
    version = _publish_untrained(tmp_path, edit)
    with pytest.raises(ArtifactValidationError, match=reason):
        registry.load_artifact(tmp_path, "shapes", version)


def test_an_untouched_artifact_loads(tmp_path):
    version = _publish_untrained(tmp_path)
    assert registry.load_artifact(tmp_path, "shapes", version).class_labels == ["a", "b", "c"]
