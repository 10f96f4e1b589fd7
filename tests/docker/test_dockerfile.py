"""Static checks of the Dockerfile: no Docker engine needed (CI); ``tests/docker/e2e.sh``
builds and runs the images for real."""

import fnmatch
import functools
import http.server
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import REPO

yaml = pytest.importorskip("yaml")

COMPOSE = REPO / "docker-compose.yml"
GPU_COMPOSE = REPO / "docker-compose.gpu.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICE_CMD = ["gunicorn", "-c", "service/gunicorn.conf.py", "service.app:create_app()"]


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text()
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        logical.append(current)
        current = ""
    pairs = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (the FROM line included)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)$", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            current = match.group(1)
            result[current] = []
        if current is not None:
            result[current].append((keyword, rest))
    return result


def stage_chain(name: str) -> list[str]:
    """A stage and the stages it is built FROM, nearest first."""
    all_stages = stages()
    chain = [name]
    while True:
        parent = all_stages[chain[-1]][0][1].split()[0]
        if parent not in all_stages:
            return chain
        chain.append(parent)


def effective(name: str, keyword: str) -> list[str]:
    """Arguments of ``keyword`` in a stage and its parents, in build order."""
    found = []
    for stage in reversed(stage_chain(name)):
        found += [rest for kw, rest in stages()[stage] if kw == keyword]
    return found


def test_dockerfile_is_multi_stage_with_api_and_trainer_targets():
    names = list(stages())
    assert len(names) >= 3
    assert {"deps", "api", "trainer"} <= set(names)
    assert names[-1] == "api", "a plain `docker build .` gives the service image"


@pytest.mark.parametrize("target", ["api", "trainer"])
def test_final_images_run_as_a_non_root_user(target):
    users = effective(target, "USER")
    assert users, f"{target} sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("target", ["api", "trainer"])
def test_cmd_is_exec_form(target):
    cmds = effective(target, "CMD")
    assert cmds, f"{target} has no CMD"
    assert isinstance(json.loads(cmds[-1]), list), "exec-form CMD: signals reach the process"


def test_api_cmd_runs_gunicorn_with_the_projects_config():
    assert json.loads(effective("api", "CMD")[-1]) == SERVICE_CMD


def test_trainer_cmd_runs_the_schedule():
    assert json.loads(effective("trainer", "CMD")[-1]) == ["python", "-m", "training", "schedule"]


def test_api_healthcheck_probes_readiness_without_curl():
    (check,) = effective("api", "HEALTHCHECK")
    assert "/health/ready" in check and "urllib" in check and "curl" not in check
    assert re.search(r"CMD\s+\[", check), "exec-form healthcheck"


def test_python_runs_unbuffered():
    envs = " ".join(effective("api", "ENV"))
    assert re.search(r"PYTHONUNBUFFERED=1", envs)


PACKAGES = ("models", "artifacts", "training", "service")


def copied_sources(name: str) -> set[str]:
    """What a stage and its parents COPY from the build context (not from other stages)."""
    return {rest.split()[0].rstrip("/") for rest in effective(name, "COPY") if not rest.startswith("--from")}


def test_dependencies_are_installed_before_the_source_is_copied():
    instructions = dockerfile_instructions()
    first_source_copy = min(i for i, (kw, rest) in enumerate(instructions)
                            if kw == "COPY" and rest.split()[0].rstrip("/") in PACKAGES)
    installs = [i for i, (kw, rest) in enumerate(instructions)
                if kw == "RUN" and "pip install" in rest]
    assert installs and max(installs) < first_source_copy
    deps_copies = [rest for kw, rest in stages()["deps"] if kw == "COPY"]
    assert not [c for c in deps_copies if any(package in c for package in PACKAGES)]


@pytest.mark.parametrize(("target", "packages"), [("api", {"models", "artifacts", "service"}),
                                                  ("trainer", {"models", "artifacts", "training"})])
def test_each_image_copies_only_the_packages_it_runs(target, packages):
    """The api never imports training/ (nor the trainer service/): neither image carries it."""
    assert copied_sources(target) == packages


def test_dockerignore_keeps_what_the_images_copy():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = {source for stage in stages() for source in copied_sources(stage)}
    assert sources >= set(PACKAGES) | {"pyproject.toml"}
    excluded = {source for source in sources for pattern in patterns if fnmatch.fnmatch(source, pattern)}
    assert not excluded, f".dockerignore leaves {excluded} out of the build context"


# ---------------------------------------------------------------- the torch install and its fallback

PIP_INDEX = "https://pip.example.invalid/simple"


def torch_install_command() -> str:
    (run,) = [rest for kw, rest in stages()["deps"] if kw == "RUN" and "TORCH_INDEX_URL" in rest]
    return run


def run_torch_install(tmp_path: Path, torch_index: str) -> tuple[list[str], str]:
    """Run the deps stage's torch RUN line as `docker build` would (sh -c, the ARGs in the
    environment), with a real python for the probe and a `pip` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "pip-args"
    for name, body in (("pip", f'echo "$@" > {shlex.quote(str(calls))}'),
                       ("python", f'exec {shlex.quote(sys.executable)} "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TORCH_INDEX_URL": torch_index, "PIP_INDEX_URL": PIP_INDEX}
    result = subprocess.run(["/bin/sh", "-c", torch_install_command()], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return calls.read_text().split(), result.stdout + result.stderr


def test_torch_index_is_a_build_argument_defaulting_to_cpu_wheels():
    args = [rest for kw, rest in stages()["deps"] if kw == "ARG"]
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in args
    assert "PIP_INDEX_URL=https://pypi.org/simple" in args


def test_torch_comes_from_the_torch_index_when_it_answers(tmp_path):
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<a href='torch.whl'>torch.whl</a>")
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "index"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}"
        pip_args, log = run_torch_install(tmp_path, index)
    finally:
        server.shutdown()
    assert pip_args == ["install", "--index-url", index, "-r", "/tmp/torch.txt"]
    assert "WARNING" not in log


def test_torch_falls_back_to_the_pip_index_and_says_so_when_the_torch_index_is_unreachable(tmp_path):
    with socket.socket() as closed:  # bound, never listening: a connection is refused at once
        closed.bind(("127.0.0.1", 0))
        index = f"http://127.0.0.1:{closed.getsockname()[1]}/whl/cpu"
        pip_args, log = run_torch_install(tmp_path, index)
    assert pip_args == ["install", "--index-url", PIP_INDEX, "-r", "/tmp/torch.txt"]
    assert f"the torch index {index} did not answer" in log and PIP_INDEX in log


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_trainer_image_has_the_offline_fashion_mnist():
    runs = " ".join(effective("trainer", "RUN"))
    assert "apt-get install" in runs and "dataset-fashion-mnist" in runs
    assert "rm -rf /var/lib/apt/lists" in runs


def test_only_the_trainer_installs_the_training_extra(tmp_path):
    """matplotlib draws the training side's report pictures: the trainer installs the `training`
    extra of pyproject.toml (extracted like the other pins), the api image does without it."""
    (extract,) = [rest for kw, rest in stages()["requirements"] if kw == "RUN"]
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    result = subprocess.run(["/bin/sh", "-c", extract.replace("/tmp/", f"{tmp_path}/")], capture_output=True,
                            text=True, timeout=60, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    training = (tmp_path / "training.txt").read_text().split()
    assert training and any(req.startswith("matplotlib") for req in training)
    assert not any("matplotlib" in line for line in (tmp_path / "rest.txt").read_text().splitlines())

    def installs_training_extra(target: str) -> bool:
        return any("-r /tmp/training.txt" in rest for rest in effective(target, "RUN"))

    assert installs_training_extra("trainer") and not installs_training_extra("api")
    assert not any("training.txt" in rest for rest in effective("api", "COPY"))


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "registry", "runs", "data", ".env"} <= ignored


def test_compose_targets_exist_in_the_dockerfile():
    compose = yaml.safe_load(COMPOSE.read_text())
    for name in ("api", "trainer"):
        assert compose["services"][name]["build"]["target"] in stages()


def test_api_container_listens_on_every_interface(tmp_path):
    """start.sh binds 127.0.0.1 for a local run; in a container only a 0.0.0.0 bind is reachable
    through the published port. Evaluates service/gunicorn.conf.py in the api's environment."""
    compose = yaml.safe_load(COMPOSE.read_text())
    image_env = {}
    for rest in effective("api", "ENV"):
        image_env.update(item.split("=", 1) for item in shlex.split(rest))
    for name, value in compose["services"]["api"]["environment"].items():
        image_env[name] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))  # ${VAR:-default}
    env = {name: image_env[name] for name in ("BIND", "PORT") if name in image_env}
    result = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; print(runpy.run_path(sys.argv[1])['bind'])",
         "service/gunicorn.conf.py"],
        cwd=REPO, env={**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 0, result.stderr
    published = compose["services"]["api"]["ports"][0].rsplit(":", 1)[1]
    assert result.stdout.strip() == f"0.0.0.0:{published}"
