"""``python -m training export``: the exports of a real tiny published version, run the way a
client runs them (ONNX Runtime, ``torch.export.load``, Triton's own config schema), checked
against the model the service serves, the registry around them left as it should be.

This file: the formats, their parity and their contract."""

import json
import sys

import numpy as np
import pytest
import torch
from support.exports import (
    NAME,
    SITE_PACKAGES,
    TOLERANCE,
    by_batches,
    model_probabilities,
    normalise,
    read_manifest,
    run,
    sha256,
    softmax,
    tree,
)

from artifacts import registry
from artifacts.preprocess import EvalTransform
from training.export import DEFAULT_MAX_BATCH_SIZE, DEFAULT_OPSET
from training.export.exporter import export_version

# --- the command and what it writes


def test_export_writes_every_format_prints_parity_and_leaves_the_version_unchanged(exported):
    proc = exported.proc
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"exported {NAME} version 1 to {exported.directory}"
    for fmt in ("onnx", "torch-export", "triton"):
        line = next(line for line in lines if line.split()[0] == fmt)
        drift = float(line.split("max |dp| ")[1].split()[0])
        assert 0 <= drift <= TOLERANCE and "golden set" in line
    assert lines[-1] == f"serve it: tritonserver --model-repository={exported.directory / 'triton'}"
    for path in ("export.json", "model.onnx", "model.pt2", "triton/fm/config.pbtxt", "triton/fm/labels.txt",
                 "triton/fm/1/model.onnx"):
        assert (exported.directory / path).is_file(), path
    # the published versions and the production pointer: the same files, byte for byte
    assert exported.after == exported.before


def test_manifest_lists_every_file_with_its_sha256_and_the_input_contract(exported):
    directory, manifest = exported.directory, read_manifest(exported.directory)
    metadata = json.loads((registry.model_dir(exported.registry, NAME) / "1" / "metadata.json").read_text())
    listed = {}
    for entry in manifest["formats"].values():
        listed |= entry["files"]
    on_disk = {k for k, v in tree(directory).items() if v != "dir"} - {"export.json"}
    assert set(listed) == on_disk
    assert all(sha256(directory / path) == digest for path, digest in listed.items())
    assert (manifest["model"], manifest["version"]) == (NAME, "1")
    assert manifest["source"]["weights_sha256"] == metadata["weights_sha256"]
    contract = manifest["input"]
    assert contract["shape"] == ["batch", 1, 28, 28] and contract["dtype"] == "float32"
    assert contract["layout"] == "NCHW"
    assert (contract["mean"], contract["std"]) == (metadata["input"]["mean"], metadata["input"]["std"])
    assert manifest["class_labels"] == metadata["class_labels"] and len(manifest["class_labels"]) == 10
    assert manifest["output"]["shape"] == ["batch", 10]
    assert manifest["output"]["test_time_augmentation"] == "none"
    assert manifest["formats"]["onnx"]["opset"] == manifest["formats"]["triton"]["opset"] == DEFAULT_OPSET
    for entry in manifest["formats"].values():
        assert entry["parity"]["max_abs_probability_difference"] <= TOLERANCE
        assert entry["parity"]["batch_sizes"][0] == 1 and entry["parity"]["inputs"] == "golden set"


def test_onnx_and_torch_export_give_the_models_probabilities_at_batch_1_3_and_17(exported, held_out):
    ort = pytest.importorskip("onnxruntime")
    artifact = registry.load_artifact(exported.registry, NAME, "1")
    batch = normalise(held_out, read_manifest(exported.directory))
    served = EvalTransform(spec=artifact.input_spec)(torch.from_numpy(held_out)).numpy()
    np.testing.assert_allclose(batch, served, atol=1e-5)  # the stated contract is the service's
    expected = model_probabilities(artifact.model, batch)
    assert expected.max(axis=1).mean() > 0.2  # a trained model, not a near-uniform one

    session = ort.InferenceSession(str(exported.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, dynamic batch axis
    onnx = by_batches(lambda b: softmax(session.run(["logits"], {"input": b})[0]), batch)
    program = torch.export.load(exported.directory / "model.pt2").module()
    pt2 = by_batches(lambda b: program(torch.from_numpy(b)).softmax(dim=1).detach().numpy(), batch)
    assert np.abs(onnx - expected).max() <= TOLERANCE
    assert np.abs(pt2 - expected).max() <= TOLERANCE


def test_exports_load_and_run_without_the_project(exported, held_out, tmp_path):
    """A client with only the export directory: ``python -I -S`` (no .pth, so not even the
    editable install's finder) with cwd outside the repository, site-packages added by hand."""
    pytest.importorskip("onnxruntime")
    artifact = registry.load_artifact(exported.registry, NAME, "1")
    batch = normalise(held_out, read_manifest(exported.directory))
    np.save(tmp_path / "batch.npy", batch)
    client = tmp_path / "client.py"
    client.write_text(f"""\
import importlib, json, sys
from pathlib import Path
sys.path.append({str(SITE_PACKAGES)!r})
for name in ("models", "artifacts", "training"):
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"{{name}} is importable")
import numpy as np, onnxruntime, torch
export, batch = Path(sys.argv[1]), np.load("batch.npy")
manifest = json.loads((export / "export.json").read_text())
session = onnxruntime.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
program = torch.export.load(str(export / "model.pt2")).module()
slices = [slice(0, 1), slice(1, 4), slice(4, len(batch))]
onnx = np.concatenate([session.run([manifest["output"]["name"]], {{manifest["input"]["name"]: batch[s]}})[0]
                       for s in slices])
pt2 = np.concatenate([program(torch.from_numpy(batch[s])).detach().numpy() for s in slices])
np.savez("logits.npz", onnx=onnx, pt2=pt2)
print(json.dumps(session.get_modelmeta().custom_metadata_map))
""")
    proc = run([sys.executable, "-I", "-S", str(client), str(exported.directory)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = model_probabilities(artifact.model, batch)
    logits = np.load(tmp_path / "logits.npz")
    assert np.abs(softmax(logits["onnx"]) - expected).max() <= TOLERANCE
    assert np.abs(softmax(logits["pt2"]) - expected).max() <= TOLERANCE
    meta = json.loads(proc.stdout.strip().splitlines()[-1])  # the contract inside model.onnx itself
    assert json.loads(meta["class_labels"]) == artifact.class_labels
    assert json.loads(meta["mean"]) == list(artifact.input_spec.mean) and meta["version"] == "1"


def test_triton_repository_is_a_valid_model_config_for_the_onnx_graph(exported):
    ort = pytest.importorskip("onnxruntime")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    model = exported.directory / "triton" / NAME
    config = text_format.Parse((model / "config.pbtxt").read_text("utf-8"), model_config_pb2.ModelConfig())
    assert (config.name, config.platform) == (NAME, "onnxruntime_onnx")
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE and config.HasField("dynamic_batching")
    session = ort.InferenceSession(str(model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    [graph_input], [graph_output] = session.get_inputs(), session.get_outputs()
    [tensor] = config.input
    assert tensor.name == graph_input.name and tensor.data_type == model_config_pb2.TYPE_FP32
    assert list(tensor.dims) == [1, 28, 28] == graph_input.shape[1:]  # Triton's dims leave out the batch
    [output] = config.output
    assert output.name == graph_output.name and output.data_type == model_config_pb2.TYPE_FP32
    assert list(output.dims) == [10] and output.label_filename == "labels.txt"
    labels = registry.load_artifact(exported.registry, NAME, "1").class_labels
    assert (model / "labels.txt").read_text("utf-8").splitlines() == labels
    assert (model / "1" / "model.onnx").read_bytes() == (exported.directory / "model.onnx").read_bytes()


def test_a_tta_version_exports_the_flip_averaged_model(fresh, held_out):
    ort = pytest.importorskip("onnxruntime")
    artifact = registry.load_artifact(fresh, NAME, "3")
    result = export_version(fresh, NAME, "3", ["onnx", "torch-export"])
    assert result.manifest["output"]["test_time_augmentation"] == "hflip"
    batch = normalise(held_out, result.manifest)
    expected = model_probabilities(artifact.model, batch)
    plain = model_probabilities(artifact.model.model, batch)  # FlipAveraged wraps the plain model
    assert np.abs(expected - plain).max() > 1e-3  # so parity below sees the averaging
    session = ort.InferenceSession(str(result.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx = by_batches(lambda b: softmax(session.run(["logits"], {"input": b})[0]), batch)
    program = torch.export.load(result.directory / "model.pt2").module()
    pt2 = by_batches(lambda b: program(torch.from_numpy(b)).softmax(dim=1).detach().numpy(), batch)
    assert np.abs(onnx - expected).max() <= TOLERANCE
    assert np.abs(pt2 - expected).max() <= TOLERANCE


