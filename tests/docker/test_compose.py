"""Static checks of the compose files: no Docker engine needed (CI). They are also validated
against the compose-spec schema by ``docker compose config`` when a Docker CLI with the compose
plugin is installed (skipped otherwise); ``tests/docker/e2e.sh`` runs everything for real.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
from support import REPO

yaml = pytest.importorskip("yaml")

COMPOSE = REPO / "docker-compose.yml"
GPU_COMPOSE = REPO / "docker-compose.gpu.yml"
DOCKERFILE = REPO / "Dockerfile"
NGINX = REPO / "deploy" / "nginx"
SERVICE_CMD = ["gunicorn", "-c", "service/gunicorn.conf.py", "service.app:create_app()"]


# ---------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def gpu_compose() -> dict:
    return yaml.safe_load(GPU_COMPOSE.read_text())


def test_compose_has_the_services_and_named_volumes(compose):
    services = compose["services"]
    assert {"api", "trainer", "tensorboard", "lb"} <= set(services)
    assert services["tensorboard"]["profiles"] == ["tensorboard"]
    assert services["lb"]["profiles"] == ["scale"]
    assert "profiles" not in services["api"] and "profiles" not in services["trainer"]
    assert {"registry", "runs", "feedback"} <= set(compose["volumes"])
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
    # ${API_PORT-8000}: 8000 when unset; set but empty, a free host port per replica (--scale).
    assert api["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT-8000}:8000"]
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    assert api["command"] == SERVICE_CMD
    assert api["build"]["target"] == "api"



def test_api_mounts_the_registry_read_only(compose):
    """Read-only unless API_REGISTRY_MODE=rw (admin promote through the api, docs/deployment.md)."""
    api, trainer = compose["services"]["api"], compose["services"]["trainer"]
    assert "registry:/registry:${API_REGISTRY_MODE:-ro}" in api["volumes"]
    assert "registry:/registry" in trainer["volumes"], "the trainer writes the registry"
    assert "runs:/runs" in trainer["volumes"]


def test_the_api_writes_the_feedback_store_and_the_trainer_only_reads_it(compose):
    api, trainer = compose["services"]["api"], compose["services"]["trainer"]
    assert "feedback:/feedback" in api["volumes"]
    assert "feedback:/feedback:ro" in trainer["volumes"]
    assert api["environment"]["FEEDBACK_DIR"] == "/feedback"
    assert trainer["environment"]["TRAIN_FEEDBACK_DIR"] == "/feedback"


def test_api_root_filesystem_is_read_only_with_a_tmpfs(compose):
    """As readOnlyRootFilesystem in deploy/k8s: only the volumes and /tmp (gunicorn's heartbeat
    files, the Prometheus multiprocess directory) are writable."""
    for name in ("api", "lb"):
        service = compose["services"][name]
        assert service["read_only"] is True, name
        assert [mount.split(":")[0] for mount in service["tmpfs"]] == ["/tmp"], name


def test_every_named_volume_mount_point_is_made_for_the_app_user(compose):
    """A named volume starts as a copy of its mount point in the image: a mount point the image
    lacks starts out owned by root, and the non-root services cannot write it (a feedback store
    that answers 503 to every label)."""
    dockerfile = DOCKERFILE.read_text()
    (made,) = re.findall(r"RUN mkdir -p ([^&]+)&& chown app:app ([^\n]+)", dockerfile)
    created, owned = set(made[0].split()), set(made[1].split())
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source in compose["volumes"]:
                assert target in created and target in owned, target


def test_scale_profile_puts_nginx_in_front_of_the_api_replicas(compose):
    lb = compose["services"]["lb"]
    assert lb["build"]["context"] == "deploy/nginx"
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    assert lb["ports"] == ["${API_BIND:-127.0.0.1}:${LB_PORT:-8080}:8080"]
    assert "/lb-health" in " ".join(lb["healthcheck"]["test"])


def test_nginx_re_resolves_the_api_service_name_to_see_every_replica():
    """A name in a literal proxy_pass is resolved once at start (replicas added later would get
    no traffic); in a variable, through Docker's DNS at request time."""
    conf = (NGINX / "nginx.conf").read_text()
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", conf, re.M)
    (upstream,) = re.findall(r"^\s*set \$api_upstream (\S+);", conf, re.M)
    assert upstream == "http://api:8000"  # the compose service name and the api's PORT
    assert re.search(r"^\s*proxy_pass \$api_upstream;", conf, re.M)
    assert re.search(r"^\s*listen 8080;", conf, re.M)
    assert "location = /lb-health" in conf


def test_nginx_image_is_debians_package_on_the_local_base_image_run_as_non_root():
    dockerfile = (NGINX / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile and "FROM ${PYTHON_IMAGE}" in dockerfile
    assert re.search(r"apt-get install -y --no-install-recommends nginx\b", dockerfile)
    assert re.findall(r"^USER (\S+)", dockerfile, re.M) == ["www-data"]
    assert '"daemon off;"' in dockerfile


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


@pytest.mark.parametrize("secret", ["ADMIN_TOKEN", "FEEDBACK_TOKEN"])
def test_no_secret_has_a_non_empty_default(compose, secret):
    token = compose["services"]["api"]["environment"][secret]
    assert token == f"${{{secret}:-}}" or token.startswith(f"${{{secret}:?")


def test_gpu_override_reserves_nvidia_devices_for_both_services(gpu_compose):
    for name in ("api", "trainer"):
        service = gpu_compose["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert "cuda" in service["environment"]["DEVICE"]
        assert "whl/cu" in service["build"]["args"]["TORCH_INDEX_URL"]



@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
@pytest.mark.parametrize("files", [["docker-compose.yml"],
                                   ["docker-compose.yml", "docker-compose.gpu.yml"]])
def test_compose_files_pass_the_compose_spec_schema(files):
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("no docker compose plugin")
    args = [arg for f in files for arg in ("-f", f)]
    result = subprocess.run(["docker", "compose", *args, "--profile", "tensorboard", "--profile", "scale",
                             "config", "-q"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
@pytest.mark.parametrize(("env", "published", "registry_mode"), [
    ({}, "8000", True),  # plain `docker compose up`, as before
    ({"API_PORT": ""}, None, True),  # --scale api=N: a free host port each
    ({"API_PORT": "9000", "API_REGISTRY_MODE": "rw"}, "9000", False),
])
def test_compose_renders_the_api_port_and_registry_mode(env, published, registry_mode):
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose plugin")
    base = {k: v for k, v in os.environ.items() if k not in ("API_PORT", "API_REGISTRY_MODE")}
    result = subprocess.run(["docker", "compose", "--profile", "scale", "config", "--format", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=60, env=base | env)
    assert result.returncode == 0, result.stderr
    api = json.loads(result.stdout)["services"]["api"]
    (port,) = api["ports"]
    assert port["target"] == 8000 and port["host_ip"] == "127.0.0.1"
    assert port.get("published") == published
    (registry,) = [v for v in api["volumes"] if v["source"] == "registry"]
    assert registry.get("read_only", False) is registry_mode
