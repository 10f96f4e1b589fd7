"""``deploy/k8s`` built by kustomize itself, where a machine has it (the standalone binary, else
``kubectl kustomize``): the same objects as ``support.kustomize.render`` prints, field for field,
and the same strict validation. Skipped, saying why, where neither is on PATH."""

import shutil
import subprocess
from functools import cache

import kubernetes_validate
import pytest
import yaml
from test_k8s import K8S_VERSIONS, KUSTOMIZATIONS, rendered

# The real renderer, where a machine has one: the standalone binary, else kubectl's built-in copy.
KUSTOMIZE = (["kustomize", "build"] if shutil.which("kustomize")
             else ["kubectl", "kustomize"] if shutil.which("kubectl") else None)


@cache
def kustomized(name: str) -> tuple[dict, ...]:
    """The objects ``kustomize build`` (or ``kubectl kustomize``) prints for a kustomization."""
    if KUSTOMIZE is None:
        pytest.skip("neither kustomize nor kubectl is on PATH: only support.kustomize renders here")
    result = subprocess.run([*KUSTOMIZE, str(KUSTOMIZATIONS[name])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(KUSTOMIZE)} {name}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _ids(objects) -> dict[tuple, dict]:
    ids = {(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    assert len(ids) == len(objects), "duplicate objects"
    return ids


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_renders_the_same_objects_as_our_renderer(name):
    """Same objects, field for field; only the order differs (kustomize sorts by kind)."""
    assert _ids(kustomized(name)) == _ids(rendered(name))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_output_passes_kubernetes_validate_strict(name, version):
    for obj in kustomized(name):
        if obj["kind"] != "InferenceService":  # a CRD: equal to ours, whose fields a test below checks
            kubernetes_validate.validate(obj, version, strict=True)
