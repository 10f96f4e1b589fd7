"""``deploy/k8s``: the kustomizations render, every Kubernetes object passes
``kubernetes-validate --strict`` (Kubernetes' own OpenAPI schemas, offline), the KServe
InferenceService has only the fields its CRD documents, and the manifests agree with the
service (probe paths are routes, environment names are settings, the CPU arithmetic holds).

No cluster here, and ``kubectl`` only on some machines: ``support.kustomize.render`` implements
the kustomization fields these files use (``resources``, ``namespace``, ``images``, ``patches`` as
JSON 6902 operations with a kind/name target) the way kustomize does, and fails on any other
field, so a kustomization that grows a feature this renderer lacks fails here instead of being
half checked; where ``kustomize`` or ``kubectl`` is on PATH, test_kustomize.py checks the real
build against it. What it does not prove: what an admission controller or the KServe controller
would do beyond the documented fields.
"""

import re
from functools import cache

import kubernetes_validate
import pytest
from referencing import Registry, Resource
from support import REPO
from support.kustomize import render

K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S, "kserve": K8S / "kserve", "example": K8S / "overlays" / "example"}
# The oldest Kubernetes these manifests claim (podFailurePolicy GA, CronJob timeZone) and the
# newest the package knows.
K8S_VERSIONS = ["1.31", kubernetes_validate.utils.latest_version()]
@cache
def rendered(name: str) -> tuple[dict, ...]:
    return tuple(render(KUSTOMIZATIONS[name]))


def objects_of(kind: str, names=tuple(KUSTOMIZATIONS)) -> list[tuple[str, dict]]:
    return [(name, obj) for name in names for obj in rendered(name) if obj["kind"] == kind]


def _by_id(pairs):
    return {"ids": [f"{name}:{obj['kind']}/{obj['metadata']['name']}" for name, obj in pairs],
            "argvalues": [obj for _, obj in pairs]}


# ----------------------------------------------------------------------------- schemas

NATIVE = [(name, obj) for name in KUSTOMIZATIONS for obj in rendered(name) if obj["kind"] != "InferenceService"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("obj", **_by_id(NATIVE))
def test_every_object_passes_kubernetes_validate_strict(obj, version):
    kubernetes_validate.validate(obj, version, strict=True)


def test_renders_the_objects_the_issue_lists():
    kinds = sorted(obj["kind"] for obj in rendered("base"))
    assert kinds == ["CronJob", "Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim",
                     "PersistentVolumeClaim", "Service"]
    assert [obj["kind"] for obj in rendered("kserve")] == ["InferenceService"]
    assert {obj["metadata"].get("namespace") for obj in rendered("example") if obj["kind"] != "Namespace"} == {
        "imgclf"}


# KServe's InferenceService, as its CRD defines it: kserve/kserve
# config/crd/full/serving.kserve.io_inferenceservices.yaml, version v1beta1 (served and stored),
# at commit aaac4e294dae (2026-08-21, after v0.20.0-rc0). The subset checked: the top level,
# `spec` (required: predictor; no field outside canary, explainer, predictor, transformer), the
# predictor's field names (all of the CRD's, so that a typo fails) with the types of those used
# here, and its embedded core types (containers, volumes, securityContext) against Kubernetes'
# own strict schemas, which the CRD copies from k8s.io/api.
PREDICTOR_FIELDS = (
    "activeDeadlineSeconds affinity annotations autoScaling automountServiceAccountToken batcher "
    "canaryTrafficPercent containerConcurrency containers deploymentStrategy dnsConfig dnsPolicy "
    "enableServiceLinks hostAliases hostIPC hostNetwork hostPID hostUsers hostname hostnameOverride "
    "huggingface imagePullSecrets initContainers labels lightgbm logger maxReplicas minReplicas model "
    "name nodeName nodeSelector onnx os overhead paddle pmml preemptionPolicy priority "
    "priorityClassName pytorch readinessGates resourceClaims resources restartPolicy runtimeClassName "
    "scaleMetric scaleMetricType scaleTarget schedulerName schedulingGates securityContext "
    "serviceAccount serviceAccountName setHostnameAsFQDN shareProcessNamespace sklearn "
    "storageContainerName storageUris subdomain tensorflow terminationGracePeriodSeconds timeout "
    "tolerations topologySpreadConstraints triton volumes workerSpec xgboost").split()
_CORE = "/api/_definitions.json#/$defs/io.k8s.api.core.v1."
INFERENCE_SERVICE_SCHEMA = {
    "$id": "https://kubernetes.io/api/inferenceservice/serving.kserve.io/v1beta1",  # resolves /api/_definitions.json
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"$ref": "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "spec": {
            "type": "object", "required": ["predictor"], "additionalProperties": False,
            "properties": {"canary": {}, "explainer": {}, "transformer": {}, "predictor": {
                "type": "object", "additionalProperties": False,
                "properties": {name: {} for name in PREDICTOR_FIELDS} | {
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                    "scaleTarget": {"type": "integer"},
                    "timeout": {"type": "integer"},
                    "terminationGracePeriodSeconds": {"type": "integer"},
                    "automountServiceAccountToken": {"type": "boolean"},
                    "containers": {"type": "array", "items": {"$ref": _CORE + "Container"}},
                    "volumes": {"type": "array", "items": {"$ref": _CORE + "Volume"}},
                    "securityContext": {"$ref": _CORE + "PodSecurityContext"},
                },
            }},
        },
    },
}
# Rules of KServe's Go code, not of the CRD (pkg/constants/constants.go, predictor_custom.go).
DEPLOYMENT_MODES = {"Standard", "Knative", "RawDeployment", "Serverless", "ModelMesh"}
AUTOSCALER_CLASSES = {"hpa", "kpa", "external", "keda", "none"}


@pytest.mark.parametrize("isvc", **_by_id(objects_of("InferenceService")))
def test_inference_service_has_only_the_fields_its_crd_documents(isvc):
    import jsonschema
    from kubernetes_validate.utils import schema_contents

    version = kubernetes_validate.utils.latest_version()
    definitions = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ Registry()
    jsonschema.Draft202012Validator(INFERENCE_SERVICE_SCHEMA, registry=registry).validate(isvc)

    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in DEPLOYMENT_MODES
    assert annotations["serving.kserve.io/autoscalerClass"] in AUTOSCALER_CLASSES
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # what KServe names a lone custom container
    assert _env(container)["PROTOCOL"] == "v2"  # a custom predictor's protocol version
    (port,) = container["ports"]  # KServe's Service targets the first port; Knative allows one
    assert port["name"] in ("http1", "h2c")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"]  # Knative's rule
        assert container[probe]["httpGet"]["path"].startswith("/v2/health/")
    assert predictor["scaleMetric"] == "cpu" and predictor["minReplicas"] <= predictor["maxReplicas"]


# ----------------------------------------------------------------------------- the api pods

API_PODS = [(name, obj["spec"]["template"]["spec"]) for name, obj in objects_of("Deployment")] + [
    (name, obj["spec"]["predictor"]) for name, obj in objects_of("InferenceService")]


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def _mounts(pod: dict, container: dict) -> dict[str, tuple[dict, dict]]:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    return {mount["mountPath"]: (mount, volumes[mount["name"]]) for mount in container["volumeMounts"]}


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize(("name", "pod"), API_PODS, ids=[name for name, _ in API_PODS])
def test_api_cpu_matches_workers_times_threads(name, pod):
    """WEB_CONCURRENCY x TORCH_THREADS cores = the request = the limit, in whole cores."""
    (container,) = pod["containers"]
    env, resources = _env(container), container["resources"]
    cores = int(env["WEB_CONCURRENCY"]) * int(env["TORCH_THREADS"])
    assert _cores(resources["requests"]["cpu"]) == _cores(resources["limits"]["cpu"]) == cores
    assert int(env["TORCH_THREADS"]) <= int(env["TORCH_THREADS_ALONE"]) <= cores
    assert resources["requests"]["memory"] == resources["limits"]["memory"]  # Guaranteed QoS


@pytest.mark.parametrize(("name", "pod"), API_PODS, ids=[name for name, _ in API_PODS])
def test_api_runs_non_root_on_a_read_only_root_with_the_mounts_it_writes(name, pod):
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    env, mounts = _env(container), _mounts(pod, container)
    # What the server writes outside its volumes: gunicorn's worker heartbeat files in the temp
    # dir (no worker_tmp_dir in service/gunicorn.conf.py) and the Prometheus multiprocess files.
    assert "worker_tmp_dir" not in (REPO / "service" / "gunicorn.conf.py").read_text()
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"]):
        assert "emptyDir" in mounts[path][1], path
    registry_mount, registry = mounts[env["MODEL_REGISTRY"]]
    assert registry_mount["readOnly"] and registry["persistentVolumeClaim"]["readOnly"]
    feedback_mount, feedback = mounts[env["FEEDBACK_DIR"]]
    assert not feedback_mount.get("readOnly") and "persistentVolumeClaim" in feedback
    # The tokens: files of the mounted Secret, one key each.
    for variable, key in (("ADMIN_TOKEN_FILE", "admin-token"), ("FEEDBACK_TOKEN_FILE", "feedback-token")):
        directory, file_name = env[variable].rsplit("/", 1)
        tokens_mount, tokens = mounts[directory]
        assert tokens_mount["readOnly"] and tokens["secret"]["secretName"] == "imgclf-tokens"
        assert {"key": key, "path": file_name} in tokens["secret"]["items"]


@pytest.mark.parametrize(("name", "pod"), API_PODS, ids=[name for name, _ in API_PODS])
def test_api_environment_names_only_service_settings(name, pod):
    """A misspelt variable would be ignored by the service: every name must be read by it."""
    from service.settings import Settings

    conf = (REPO / "service" / "gunicorn.conf.py").read_text()
    gunicorn = set(re.findall(r"""os\.environ\.get\(["']([A-Z_]+)["']""", conf))
    known = {field.upper() for field in Settings.model_fields} | gunicorn | {"PROMETHEUS_MULTIPROC_DIR", "PROTOCOL"}
    (container,) = pod["containers"]
    assert set(_env(container)) - known == set()


@pytest.mark.parametrize("deployment", **_by_id(objects_of("Deployment")))
def test_api_probes_are_routes_of_the_service(deployment, app_paths):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    probes = {kind: container[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": "/health/live", "readinessProbe": "/health/ready",
                      "livenessProbe": "/health/live"}
    assert set(probes.values()) <= app_paths
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"


def test_kserve_probes_are_routes_of_the_service(app_paths):
    if not any(path.startswith("/v2") for path in app_paths):
        pytest.skip("the service has no /v2 routes yet (Open Inference Protocol: another change)")
    ((_, isvc),) = objects_of("InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert {container[kind]["httpGet"]["path"] for kind in ("readinessProbe", "livenessProbe")} <= app_paths


@pytest.fixture(scope="module")
def app_paths(tmp_path_factory) -> set[str]:
    from support.service import inprocess_settings

    from service.app import create_app

    app = create_app(inprocess_settings(tmp_path_factory.mktemp("registry")))
    return {route.path for route in app.routes}


@pytest.mark.parametrize("name", ["base", "example"])
def test_service_and_autoscaler_point_at_the_api_deployment(name):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered(name)}
    pod = objects["Deployment", "imgclf-api"]["spec"]["template"]
    service = objects["Service", "imgclf-api"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["ports"][0]["targetPort"] in [port["name"] for port in pod["spec"]["containers"][0]["ports"]]
    target = objects["HorizontalPodAutoscaler", "imgclf-api"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "imgclf-api")
    claims = {obj["metadata"]["name"] for (kind, _), obj in objects.items() if kind == "PersistentVolumeClaim"}
    for _, obj in objects_of("PersistentVolumeClaim", [name]):
        assert obj["spec"]["accessModes"] == ["ReadWriteMany"]
    for volume in pod["spec"]["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


# ----------------------------------------------------------------------------- the retraining job

@pytest.mark.parametrize("cronjob", **_by_id(objects_of("CronJob")))
def test_cronjob_runs_schedule_once_alone_writing_the_registry(cronjob):
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "training", "schedule", "--once"]
    env, mounts = _env(container), _mounts(pod, container)
    registry_mount, registry = mounts[env["MODEL_REGISTRY"]]
    assert not registry_mount.get("readOnly") and not registry["persistentVolumeClaim"].get("readOnly")
    feedback_mount, feedback = mounts[env["TRAIN_FEEDBACK_DIR"]]
    assert feedback_mount["readOnly"] and feedback["persistentVolumeClaim"]["readOnly"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and "/tmp" in mounts
    assert pod["securityContext"]["runAsNonRoot"]
    assert _cores(container["resources"]["requests"]["cpu"]) == int(env["TRAIN_THREADS"])


@pytest.mark.parametrize("cronjob", **_by_id(objects_of("CronJob")))
def test_cronjob_environment_names_only_job_settings(cronjob):
    from dataclasses import fields

    from training.config import TrainConfig
    from training.retrain.settings import RECIPE_PREFIX, ScheduleSettings

    known = ({f"SCHEDULE_{name.upper()}" for name in ScheduleSettings.model_fields}
             | {f"{RECIPE_PREFIX}{field.name.upper()}" for field in fields(TrainConfig)}
             | {"MODEL_REGISTRY", "MODEL_NAME", "DEVICE"})
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert set(_env(container)) - known == set()


def test_cronjob_exit_codes_are_the_documented_ones():
    """The comment's table and the podFailurePolicy name exactly the codes docs/retraining.md
    lists for ``--once``."""
    docs = (REPO / "docs" / "retraining.md").read_text()
    table = docs.split("## Exit codes of `--once`", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+)\s+\|", table, re.M)}
    manifest = (REPO / "deploy" / "k8s" / "base" / "retrain-cronjob.yaml").read_text()
    commented = {int(code) for code in re.findall(r"^#\s+(\d+)\s{2,}\S", manifest, re.M)}
    assert commented == documented, (commented, documented)
    ((_, cronjob),) = objects_of("CronJob", ["base"])
    rules = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    policy_codes = {code for rule in rules if "onExitCodes" in rule for code in rule["onExitCodes"]["values"]}
    assert policy_codes <= documented and 0 not in policy_codes


# ----------------------------------------------------------------------------- the overlay

def test_example_overlay_changes_images_storage_and_sizes():
    base = {(o["kind"], o["metadata"]["name"]): o for o in rendered("base")}
    example = {(o["kind"], o["metadata"]["name"]): o for o in rendered("example")}
    assert example.keys() - base.keys() == {("Namespace", "imgclf")}
    api = example["Deployment", "imgclf-api"]["spec"]["template"]["spec"]["containers"][0]
    job = example["CronJob", "imgclf-retrain"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert api["image"].startswith("registry.example.com/") and job["image"].startswith("registry.example.com/")
    assert _env(api)["WEB_CONCURRENCY"] == "4" and api["resources"]["limits"]["cpu"] == "4"
    for claim in ("imgclf-registry", "imgclf-feedback"):
        assert example["PersistentVolumeClaim", claim]["spec"]["storageClassName"]
    # the base is untouched by rendering the overlay (each render loads the files afresh)
    assert base["Deployment", "imgclf-api"]["spec"]["template"]["spec"]["containers"][0]["image"] == "imgclf-api:latest"


def test_render_fails_on_a_kustomization_field_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(AssertionError, match="commonLabels"):
        render(tmp_path)
