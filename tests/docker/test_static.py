"""Static checks of the Dockerfile and the compose files: no Docker engine needed (CI).

The compose files are also validated against the compose-spec schema by ``docker compose
config`` when a Docker CLI with the compose plugin is installed (skipped otherwise);
``tests/docker/e2e.sh`` builds and runs everything for real.
"""

import fnmatch
import functools
import http.server
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
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


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "registry", "runs", "data", ".env"} <= ignored


# ---------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def gpu_compose() -> dict:
    return yaml.safe_load(GPU_COMPOSE.read_text())


def test_compose_has_the_services_and_named_volumes(compose):
    services = compose["services"]
    assert {"api", "trainer", "tensorboard"} <= set(services)
    assert services["tensorboard"]["profiles"] == ["tensorboard"]
    assert "profiles" not in services["api"] and "profiles" not in services["trainer"]
    assert {"registry", "runs"} <= set(compose["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in compose["volumes"], f"{name} mounts {source}: not a named volume"


def test_every_service_has_a_healthcheck_and_a_restart_policy(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD", f"{name}: exec-form healthcheck"
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
        assert service.get("restart") in ("unless-stopped", "always"), name


def test_api_publishes_its_port_and_probes_readiness(compose):
    api = compose["services"]["api"]
    assert api["ports"] and api["ports"][0].endswith(":8000")
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    assert api["command"] == SERVICE_CMD
    assert api["build"]["target"] == "api"


def test_api_container_listens_on_every_interface(compose, tmp_path):
    """start.sh binds 127.0.0.1 for a local run; in a container only a 0.0.0.0 bind is reachable
    through the published port. Evaluates service/gunicorn.conf.py in the api's environment."""
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


def test_api_mounts_the_registry_read_only(compose):
    api, trainer = compose["services"]["api"], compose["services"]["trainer"]
    assert "registry:/registry:ro" in api["volumes"]
    assert "registry:/registry" in trainer["volumes"], "the trainer writes the registry"
    assert "runs:/runs" in trainer["volumes"]


def test_api_waits_for_a_healthy_trainer(compose):
    depends = compose["services"]["api"]["depends_on"]
    assert depends["trainer"]["condition"] == "service_healthy"
    trainer_check = " ".join(compose["services"]["trainer"]["healthcheck"]["test"])
    assert "production" in trainer_check, "trainer is healthy once a model is promoted"


def test_services_agree_on_the_registry_and_model(compose):
    api_env = compose["services"]["api"]["environment"]
    trainer_env = compose["services"]["trainer"]["environment"]
    for key in ("MODEL_REGISTRY", "MODEL_NAME"):
        assert api_env[key] == trainer_env[key]
    assert trainer_env["SCHEDULE_RUNS_DIR"] == "/runs"
    assert compose["services"]["trainer"]["command"] == ["python", "-m", "training", "schedule"]


def test_trainer_environment_names_only_known_settings(compose):
    """A typo in a variable name would be ignored by the job: every name must be a setting."""
    from training.retrain.settings import JOB_OWNED_FIELDS, RECIPE_PREFIX, ScheduleSettings

    recipe_fields = {f"{RECIPE_PREFIX}{name.upper()}" for name in _train_config_fields()}
    recipe_fields -= {f"{RECIPE_PREFIX}{name.upper()}" for name in JOB_OWNED_FIELDS}
    schedule_vars = {f"SCHEDULE_{name.upper()}" for name in ScheduleSettings.model_fields}
    known = recipe_fields | schedule_vars | {"MODEL_REGISTRY", "MODEL_NAME", "DEVICE"}
    unknown = set(compose["services"]["trainer"]["environment"]) - known
    assert not unknown


def _train_config_fields() -> list[str]:
    from dataclasses import fields

    from training.config import TrainConfig

    return [f.name for f in fields(TrainConfig)]


def test_variables_have_a_default_or_fail_with_a_message():
    """``${VAR}`` alone silently becomes an empty string; use ``${VAR:-default}`` or ``${VAR:?msg}``."""
    for path in (COMPOSE, GPU_COMPOSE):
        bare = re.findall(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", path.read_text())
        assert not bare, f"{path.name}: {bare}"


def test_no_secret_has_a_non_empty_default(compose):
    token = compose["services"]["api"]["environment"]["ADMIN_TOKEN"]
    assert token in ("${ADMIN_TOKEN:-}",) or token.startswith("${ADMIN_TOKEN:?")


def test_gpu_override_reserves_nvidia_devices_for_both_services(gpu_compose):
    for name in ("api", "trainer"):
        service = gpu_compose["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert "cuda" in service["environment"]["DEVICE"]
        assert "whl/cu" in service["build"]["args"]["TORCH_INDEX_URL"]


def test_compose_targets_exist_in_the_dockerfile(compose):
    for name in ("api", "trainer"):
        assert compose["services"][name]["build"]["target"] in stages()


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
@pytest.mark.parametrize("files", [["docker-compose.yml"],
                                   ["docker-compose.yml", "docker-compose.gpu.yml"]])
def test_compose_files_pass_the_compose_spec_schema(files):
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("no docker compose plugin")
    args = [arg for f in files for arg in ("-f", f)]
    result = subprocess.run(["docker", "compose", *args, "--profile", "tensorboard", "config", "-q"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
