"""``python -m training export``: the exports of a real tiny published version, run the way a
client runs them (ONNX Runtime, ``torch.export.load``, Triton's own config schema), checked
against the model the service serves, and the registry around them left as it should be."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support import REPO
from support.idx import make_idx_dir
from support.images import band_images
from support.training import tiny_train_config

from artifacts import production, registry
from artifacts.preprocess import EvalTransform
from training.cli import main as cli_main
from training.export import DEFAULT_MAX_BATCH_SIZE, DEFAULT_OPSET
from training.export.exporter import export_version
from training.train import main as train_main

NAME = "fm"
TOLERANCE = 1e-4
BATCHES = (slice(0, 1), slice(1, 4), slice(4, 21))  # batch 1, 3 and 17: the batch axis is dynamic
SITE_PACKAGES = Path(torch.__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the tests share two cores


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=180)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(directory: Path) -> dict[str, str]:
    """Every entry below ``directory`` (hidden ones too): files by sha256, folders as 'dir'."""
    return {p.relative_to(directory).as_posix(): "dir" if p.is_dir() else sha256(p)
            for p in sorted(directory.rglob("*"))}


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def normalise(images: np.ndarray, manifest: dict) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` to the graph's input, by the contract export.json states."""
    mean = np.array(manifest["input"]["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(manifest["input"]["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255 - mean) / std).astype(np.float32)


def by_batches(probabilities, batch: np.ndarray) -> np.ndarray:
    """``probabilities`` run at batch 1, 3 and 17, concatenated."""
    return np.concatenate([probabilities(np.ascontiguousarray(batch[s])) for s in BATCHES])


def model_probabilities(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).float().softmax(dim=1).numpy()


def read_manifest(directory: Path) -> dict:
    return json.loads((directory / "export.json").read_text("utf-8"))


def cli(*args: str, registry_dir: Path) -> int:
    return cli_main(["export", *args, "--registry", str(registry_dir), "--name", NAME])


# --- one small trained registry per module; tests that change it work on a copy


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A registry of ``fm``: 1 (production), 2, and 3 published with ``--tta hflip``; a CNN of
    four and eight channels (convolutions, BatchNorm, pooling) trained a second on band images."""
    root = tmp_path_factory.mktemp("export")
    data = make_idx_dir(root / "data", train=200, test=60, labels="cycle")
    kwargs = {"model": "cnn", "model_kwargs": {"channels": [4, 8]}, "epochs": 3,
              "lr": 3e-2, "name": NAME, "threads": 1}
    for overrides in ({"promote": True}, {"seed": 1}, {"tta": "hflip"}):
        train_main(tiny_train_config(data, root, **kwargs, **overrides))
    assert registry.list_versions(root / "registry", NAME) == ["1", "2", "3"]
    return root / "registry"


@pytest.fixture(scope="module")
def exported(base, tmp_path_factory) -> SimpleNamespace:
    """A copy of ``base`` after ``python -m training export`` (every format of production),
    with the registry's versions hashed before and after."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)
    reg = tmp_path_factory.mktemp("exported") / "registry"
    shutil.copytree(base, reg)
    before = tree(registry.model_dir(reg, NAME))
    proc = run([sys.executable, "-m", "training", "export", "--registry", str(reg), "--name", NAME], REPO)
    directory = registry.exports_dir(reg, NAME, "1")
    after = {k: v for k, v in tree(registry.model_dir(reg, NAME)).items() if not k.startswith("exports")}
    return SimpleNamespace(registry=reg, proc=proc, directory=directory, before=before, after=after)


@pytest.fixture
def fresh(base, tmp_path) -> Path:
    shutil.copytree(base, tmp_path / "registry")
    return tmp_path / "registry"


@pytest.fixture
def exported_copy(exported, tmp_path) -> Path:
    assert exported.proc.returncode == 0, exported.proc.stderr
    shutil.copytree(exported.registry, tmp_path / "registry")
    return tmp_path / "registry"


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """21 uint8 ``(1, 28, 28)`` band images neither training nor the golden set saw."""
    images, _ = band_images(21, seed=99)
    return images[:, None]


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


# --- refusals and failures write nothing and keep what was there


def test_a_tampered_artifact_is_refused_and_nothing_is_exported(fresh, caplog):
    pytest.importorskip("onnxruntime")  # the default formats include ONNX
    weights = fresh / NAME / "1" / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    assert cli(registry_dir=fresh) == 1
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "weights.pt sha256" in error and "\n" not in error
    assert not (fresh / NAME / "exports").exists()


def test_an_unpublished_version_is_refused_listing_the_published_ones(base, caplog):
    assert cli("9", registry_dir=base) == 1
    assert "version 9 is not published; published versions: 1, 2, 3" in caplog.text
    assert not (base / NAME / "exports").exists()


def test_a_failed_export_leaves_the_previous_exports_as_they_were(exported_copy, monkeypatch, caplog):
    """torch.export is checked last: ONNX and Triton are already built aside when it fails."""
    import training.export.program as program

    directory = registry.exports_dir(exported_copy, NAME, "1")
    before = tree(directory)
    real = program.program_probabilities
    monkeypatch.setattr(program, "program_probabilities", lambda path: lambda b: real(path)(b) + 1e-3)
    assert cli(registry_dir=exported_copy) == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "the torch.export program differs from the model by up to 1.00e-03" in error
    assert tree(directory) == before  # no .staging-* or .trash-* left either


def test_reexporting_one_format_replaces_it_and_keeps_the_others_entries(exported_copy):
    directory = registry.exports_dir(exported_copy, NAME, "1")
    before = read_manifest(directory)
    onnx_inode, program_inode = ((directory / f).stat().st_ino for f in ("model.onnx", "model.pt2"))
    manifest = export_version(exported_copy, NAME, "1", ["torch-export"]).manifest
    assert manifest == read_manifest(directory)
    assert {fmt: manifest["formats"][fmt] for fmt in ("onnx", "triton")} == \
        {fmt: before["formats"][fmt] for fmt in ("onnx", "triton")}
    assert (directory / "model.pt2").stat().st_ino != program_inode  # a new file, moved into place
    assert (directory / "model.onnx").stat().st_ino == onnx_inode
    assert manifest["formats"]["torch-export"]["files"] == {"model.pt2": sha256(directory / "model.pt2")}
    # an earlier format whose files changed since is no longer vouched for
    (directory / "triton" / NAME / "labels.txt").write_text("changed\n")
    manifest = export_version(exported_copy, NAME, "1", ["torch-export"]).manifest
    assert sorted(manifest["formats"]) == ["onnx", "torch-export"]
    # Triton alone builds its own graph, and must not clash with the ONNX format's file
    umask = os.umask(0o022)  # the usual one, whatever this shell's is
    try:
        manifest = export_version(exported_copy, NAME, "1", ["triton"]).manifest
    finally:
        os.umask(umask)
    assert sorted(manifest["formats"]) == ["onnx", "torch-export", "triton"]
    assert (directory / "model.onnx").stat().st_ino == onnx_inode and not (directory / ".model.onnx").exists()
    # readable by the other user a Triton server or ONNX Runtime usually runs as
    assert all(path.stat().st_mode & 0o004 for path in directory.rglob("*") if path.is_file())


def test_pruning_a_version_removes_its_exports_and_keeps_productions(exported_copy):
    export_version(exported_copy, NAME, "2", ["torch-export"])
    kept = tree(registry.exports_dir(exported_copy, NAME, "1"))
    assert production.prune_versions(exported_copy, NAME, keep=1) == ["2"]  # 1 is production, 3 newest
    assert not (exported_copy / NAME / "2").exists()
    assert not registry.exports_dir(exported_copy, NAME, "2").exists()
    assert tree(registry.exports_dir(exported_copy, NAME, "1")) == kept


def test_without_the_export_extra_onnx_fails_naming_the_install_and_torch_export_works(fresh):
    code = (
        "import sys\n"
        "for name in ('onnx', 'onnxscript', 'onnxruntime'):\n"
        "    sys.modules[name] = None  # import fails, as without the export extra\n"
        "from training.cli import main\n"
        "print('status all', main(['export', *sys.argv[1:]]), flush=True)\n"
        "print('status torch-export', main(['export', '--format', 'torch-export', *sys.argv[1:]]))\n"
    )
    proc = run([sys.executable, "-c", code, "--registry", str(fresh), "--name", NAME], REPO)
    assert proc.returncode == 0, proc.stderr
    statuses = dict(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("status "))
    assert statuses == {"all": "2", "torch-export": "0"}
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "pip install -e '.[export]'" in errors[0] and "onnx" in errors[0]
    assert "Traceback" not in proc.stderr
    directory = registry.exports_dir(fresh, NAME, "1")
    assert sorted(tree(directory)) == ["export.json", "model.pt2"]  # the failed run wrote nothing
    assert sorted(read_manifest(directory)["formats"]) == ["torch-export"]


def test_export_help_names_the_formats_and_imports_no_torch():
    code = (
        "import contextlib, io, sys\n"
        "from training.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['export', '--help'])\n"
        "print(out.getvalue())\n"
        "heavy = {'torch', 'numpy', 'PIL', 'onnx', 'onnxruntime', 'training.export.exporter'}\n"
        "print('HEAVY', sorted(heavy & set(sys.modules)))\n"
    )
    proc = run([sys.executable, "-c", code], REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert "torch-export" in proc.stdout and "--max-batch-size" in proc.stdout
    assert "pip install -e '.[export]'" in " ".join(proc.stdout.split())
