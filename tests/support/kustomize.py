"""A tiny kustomize for the manifest tests: the fields ``deploy/k8s`` uses (``resources``,
``namespace``, ``images``, ``patches`` as JSON 6902 operations with a kind/name target), the
way kustomize applies them, and an assertion on any other field. It lets the tests run where
neither ``kubectl`` nor ``kustomize`` is installed (no renderer on PyPI runs here); where one
is, tests/deploy/test_k8s.py checks that both print the same objects.

Where it knowingly differs from kustomize: objects come in the order of the files (kustomize
sorts them by kind); a patch whose target matches nothing fails here (kustomize skips it), so
that a renamed object cannot leave an overlay's patch silently unused; and ``namespace`` treats
every kind but Namespace as namespaced (kustomize knows all cluster-scoped built-in kinds, such
as ClusterRole: add one to ``CLUSTER_SCOPED`` when the manifests first use it)."""

from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace"}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


# ----------------------------------------------------------------------------- rendering

def render(root: Path) -> list[dict]:
    """The objects ``kubectl kustomize ROOT`` prints, for the supported fields, in file order."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"{root}: kustomization fields this test cannot render: {unsupported}"
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (root / entry).resolve()
        if path.is_dir():
            # kustomize refuses a base that is the root or above it (a cycle).
            assert not root.resolve().is_relative_to(path), f"{root}: {entry} contains the root"
            objects += render(path)
        else:
            assert path.is_relative_to(root.resolve()), f"{root}: file {entry} outside the root"
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        targets = [o for o in objects if o["kind"] == patch["target"]["kind"]
                   and o["metadata"]["name"] == patch["target"]["name"]]
        assert targets, f"{root}: patch target {patch['target']} matches nothing"
        for target in targets:
            for operation in yaml.safe_load(patch["patch"]):
                _apply(target, operation)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] == "Namespace":  # kustomize renames a Namespace object to the namespace
                obj["metadata"]["name"] = kustomization["namespace"]
            elif obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    ids = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(ids) == len(set(ids)), f"{root}: duplicate objects"
    return objects


def _apply(document: dict, operation: dict) -> None:
    """One JSON patch (RFC 6902) operation: add, replace, remove or test."""
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
    op = operation["op"]
    if op == "test":
        assert node[key] == operation["value"], f"patch test failed at {operation['path']}: {node[key]!r}"
    elif op == "add" and isinstance(node, list):
        node.insert(key, operation["value"])
    elif op in ("add", "replace"):
        assert op == "add" or key in node, f"replace of a missing {operation['path']}"
        node[key] = operation["value"]
    elif op == "remove":
        del node[key]
    else:
        raise AssertionError(f"unsupported patch operation {op}")


def _set_image(node, image: dict) -> None:
    """kustomize's ``images``: every ``containers``/``initContainers`` entry naming the image."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers"):
                for container in value:
                    reference = container["image"].split("@", 1)[0]
                    name, _, tag = reference.rpartition(":")
                    if not name or "/" in tag:  # no tag (a colon of host:port is not one)
                        name, tag = reference, ""
                    if name == image["name"]:
                        tag = image.get("newTag", tag)
                        container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
            else:
                _set_image(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_image(item, image)
