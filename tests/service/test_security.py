"""Security properties: only weights-only loads in the code base, the admin token (constant-time
compare, from the environment or a file, off when unset), request ids in responses and logs,
and client errors without stack traces or server paths."""

import ast
import hmac
import json
import re
import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from support import REPO
from support.images import band_images, encode
from support.service import AUTH, MODEL, TOKEN, assert_clean_error, inprocess_settings, wait_ready

from artifacts import registry
from service.api import bearer
from service.app import create_app
from service.settings import Settings

PNG = encode(band_images(1, seed=4)[0][0])
SKIP_DIRS = {".venv", ".git", "build", "dist", "node_modules", "__pycache__", ".ruff_cache"}


def _python_files() -> list[Path]:
    return [path for path in REPO.rglob("*.py")
            if not SKIP_DIRS & set(path.relative_to(REPO).parts)]


def _calls(tree: ast.AST, module: str, function: str):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == function and isinstance(node.func.value, ast.Name)
                and node.func.value.id == module):
            yield node


def test_every_torch_load_in_the_repository_is_weights_only():
    files = _python_files()
    assert len(files) > 30  # the scan actually sees the code base
    offenders, seen = [], 0
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for call in _calls(tree, "torch", "load"):
            seen += 1
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert seen > 0
    assert offenders == [], f"torch.load without weights_only=True: {offenders}"


def test_no_pickle_or_full_model_loading_outside_tests():
    offenders = []
    for path in _python_files():
        if "tests" in path.relative_to(REPO).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, function in (("pickle", "load"), ("pickle", "loads"), ("torch", "save")):
            for call in _calls(tree, module, function):
                if module == "torch" and function == "save":
                    # torch.save is fine for state dicts; never for a whole nn.Module.
                    arg = call.args[0] if call.args else None
                    if isinstance(arg, ast.Name) and arg.id == "model":
                        offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert offenders == []


def test_admin_token_is_compared_in_constant_time(registry_copy, monkeypatch):
    """Every bearer token, right or wrong, of the expected length or not, is checked by
    ``hmac.compare_digest`` against the whole expected token: no ``==`` and no early answer
    on a length mismatch, whose timing would tell an attacker how much of a guess is right."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(given, expected):
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(bearer.hmac, "compare_digest", recording)
    same_length = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
    attempts = {TOKEN: 200, same_length: 401, TOKEN + "x": 401, TOKEN[:4]: 401, "": 401}
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        wait_ready(client)
        for token, status in attempts.items():
            compared.clear()
            response = client.post("/admin/reload", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == status, (token, response.text)
            assert (token.encode(), TOKEN.encode()) in compared, f"{token!r} was not compared"


@pytest.mark.parametrize("content", ["", "   \n"])
def test_an_empty_token_or_token_file_disables_admin(registry_copy, tmp_path, monkeypatch,
                                                     content):
    token_file = tmp_path / "token"
    token_file.write_text(content)
    monkeypatch.setenv("ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    assert Settings().admin_token is None
    monkeypatch.setenv("ADMIN_TOKEN", "")
    assert Settings().admin_token is None
    monkeypatch.delenv("ADMIN_TOKEN_FILE")
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=content or None))) as client:
        response = client.post("/admin/reload", headers={"Authorization": "Bearer "})
        assert_clean_error(response, 403)


def test_admin_errors_carry_no_paths_or_internals(registry_copy):
    artifact = registry.load_artifact(registry_copy, MODEL)
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256")}
    version = registry.publish(registry_copy, metadata, artifact.model.state_dict())
    (registry_copy / MODEL / version / "weights.pt").write_bytes(b"tampered")
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        wait_ready(client)
        refused = client.post("/admin/promote", headers=AUTH, json={"version": version})
        body = assert_clean_error(refused, 422)
        assert "sha256" in body["detail"] and f"{MODEL}/{version}/weights.pt" in body["detail"]
        assert str(registry_copy) not in refused.text
        for method, path, kwargs, status in [
            ("post", "/admin/promote", {"json": {"version": "../../etc"}}, 400),
            ("post", "/admin/promote", {"content": b"{", "headers": {
                "Content-Type": "application/json"}}, 400),
            ("post", "/admin/reload?model=..%2Fx", {}, 400),
            ("post", "/admin/rollback", {}, 409),
            ("get", "/admin/reload", {}, 405),
            ("get", "/nowhere/../../etc/passwd", {}, 404),
            ("delete", "/predict", {}, 405),
        ]:
            headers = {**AUTH, **kwargs.pop("headers", {})}
            response = getattr(client, method)(path, headers=headers, **kwargs)
            assert_clean_error(response, status)
        for wrong in ({"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
                      {"Authorization": f"bearer  {TOKEN[:-1]}"}, {}):
            assert_clean_error(client.post("/admin/reload", headers=wrong), 401)


@pytest.fixture(scope="module")
def logged_server(start_server, trained_registry, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("secret") / "admin_token"
    token_file.write_text(TOKEN + "\n")  # as a docker secret: a file, newline included
    server = start_server(trained_registry, ACCESS_LOG="1", ADMIN_TOKEN_FILE=str(token_file))
    server.wait_live()
    server.wait_versions(1)
    return server


def test_admin_token_from_a_file_works_on_the_real_server(logged_server):
    response = logged_server.client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    assert_clean_error(logged_server.client.post("/admin/reload"), 401)


def test_request_ids_are_echoed_and_appear_in_the_logs(logged_server):
    client = logged_server.client
    response = client.post("/predict", content=PNG, headers={
        "Content-Type": "image/png", "X-Request-ID": "trace-42.a_b"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "trace-42.a_b"
    error = client.post("/predict", content=b"junk", headers={
        "Content-Type": "image/png", "X-Request-ID": "trace-43"})
    assert assert_clean_error(error, 422)["request_id"] == "trace-43"
    # A hostile id (log injection, huge) is replaced by a fresh one.
    for hostile in ("a\u2028b", "x" * 200, "id with spaces", "<script>"):
        reply = client.get("/health/live", headers={"X-Request-ID": hostile.encode("utf-8")})
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
    generated = client.get("/models").headers["x-request-id"]
    deadline = time.monotonic() + 10
    while not all(rid in logged_server.log_path.read_text() for rid in
                  ("trace-42.a_b", "trace-43", generated)):
        assert time.monotonic() < deadline, logged_server.logs()
        time.sleep(0.1)
    line = next(x for x in logged_server.log_path.read_text().splitlines() if "trace-42.a_b" in x)
    assert "/predict" in line  # the access log line of that request carries its id


def test_openapi_schema_declares_bearer_auth_and_no_server_details(logged_server):
    schema = logged_server.client.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    assert "servers" not in json.dumps(schema) or str(REPO) not in json.dumps(schema)
