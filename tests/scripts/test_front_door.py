"""The front-door scripts: scripts/venv.sh picks torch's index and keeps one install stamp,
scripts/start.sh binds this machine only unless told otherwise.

A stand-in virtualenv whose ``bin/python`` records every ``-m pip`` call and runs anything else
with the real interpreter, so nothing is downloaded or installed.
"""

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

HAS_NVIDIA = shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


@pytest.fixture
def venv(tmp_path) -> Path:
    """A venv directory whose python logs pip calls to pip.log (and sees no site-packages) and
    whose gunicorn prints $BIND."""
    root = tmp_path / "venv"
    (root / "bin").mkdir(parents=True)
    log = shlex.quote(str(tmp_path / "pip.log"))
    scripts = {
        "python": f'if [ "$1 $2" = "-m pip" ]; then shift 2; echo "$*" >> {log}; exit 0; fi\n'
                  f'exec {shlex.quote(sys.executable)} -S "$@"',  # -S: no site-packages, no torch
        "gunicorn": 'echo "gunicorn BIND=$BIND"',
    }
    for name, body in scripts.items():
        (root / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (root / "bin" / name).chmod(0o755)
    return root


def pip_calls(venv: Path) -> list[str]:
    log = venv.parent / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def source_venv(venv: Path, extras: str = "", **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": str(venv.parent), "VENV": str(venv),
            "PYTHONNOUSERSITE": "1", "PYTHONPATH": str(venv.parent / "site")}
    return subprocess.run(["bash", "-c", f"source scripts/venv.sh {extras}"], cwd=REPO,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def fake_installed(venv: Path, **versions: str) -> None:
    """Make importlib.metadata report these distributions as installed (via PYTHONPATH)."""
    for name, version in versions.items():
        info = venv.parent / "site" / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_start_after_test_installs_nothing_when_dev_extras_are_installed(venv):
    (venv / ".installed").write_text("dev\n")
    assert source_venv(venv).returncode == 0
    assert source_venv(venv, "dev").returncode == 0
    assert pip_calls(venv) == []


def test_a_missing_extra_installs_again_keeping_the_ones_installed(venv):
    (venv / ".installed").write_text("wandb\n")
    fake_installed(venv, torch="2.14.1+cpu", torchvision="0.29.1+cpu")
    result = source_venv(venv, "dev")
    assert result.returncode == 0, result.stderr
    assert pip_calls(venv)[-1].endswith("-e .[dev,wandb]")
    assert (venv / ".installed").read_text().split() == ["dev", "wandb"]
    assert not any("torch==" in call for call in pip_calls(venv)), "the pinned torch is already there"


def test_a_newer_pyproject_installs_again(venv, tmp_path):
    (venv / ".installed").write_text("dev\n")
    fake_installed(venv, torch="2.14.1", torchvision="0.29.1")
    stale = (REPO / "pyproject.toml").stat().st_mtime - 60
    os.utime(venv / ".installed", (stale, stale))
    assert source_venv(venv).returncode == 0
    assert pip_calls(venv)[-1].endswith("-e .[dev]")


@pytest.mark.skipif(sys.platform != "linux" or HAS_NVIDIA, reason="the CPU index is for Linux without a GPU")
def test_torch_falls_back_to_the_default_index_and_says_so_when_the_cpu_index_is_unreachable(venv):
    with socket.socket() as closed:  # a proxy that refuses every connection: no index answers
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = source_venv(venv, https_proxy=proxy, HTTPS_PROXY=proxy)
    assert result.returncode == 0, result.stderr
    torch_call = next(call for call in pip_calls(venv) if "torch==" in call)
    assert "--index-url" not in torch_call and "torch==2.14.1" in torch_call
    assert "https://download.pytorch.org/whl/cpu" in result.stderr and "default index instead" in result.stderr


def test_torch_index_url_is_used_as_given(venv):
    result = source_venv(venv, TORCH_INDEX_URL="https://example.invalid/whl/cu128")
    assert result.returncode == 0, result.stderr
    torch_call = next(call for call in pip_calls(venv) if "torch==" in call)
    assert "--index-url https://example.invalid/whl/cu128" in torch_call
    assert "torchvision==0.29.1" in torch_call


@pytest.mark.parametrize(("env", "bind", "hint"), [
    ({}, "127.0.0.1:8000", True),
    ({"PORT": "9000"}, "127.0.0.1:9000", True),
    ({"BIND": "0.0.0.0:8080"}, "0.0.0.0:8080", False),
])
def test_start_binds_this_machine_only_unless_told_otherwise(venv, tmp_path, env, bind, hint):
    (venv / ".installed").write_text("\n")
    (tmp_path / "registry" / "m").mkdir(parents=True)
    (tmp_path / "registry" / "m" / "production").write_text("1\n")
    result = subprocess.run(
        ["bash", "scripts/start.sh"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "VENV": str(venv), "MODEL_REGISTRY": str(tmp_path / "registry"),
             "MODEL_NAME": "m", **env})
    assert result.returncode == 0, result.stderr
    assert f"gunicorn BIND={bind}" in result.stdout
    assert bool(re.search(r"BIND=0\.0\.0\.0:\d+ scripts/start\.sh", result.stdout)) == hint
