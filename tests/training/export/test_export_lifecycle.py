"""``python -m training export`` around the formats: refusals and failures write nothing and keep
what was there, re-exports and pruning keep the right files, and the command line's extras."""

import logging
import os
import sys

import pytest
from support import REPO
from support.exports import NAME, cli, read_manifest, run, sha256, tree

from artifacts import production, registry
from training.export.exporter import export_version

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

