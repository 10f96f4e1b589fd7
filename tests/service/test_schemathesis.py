"""schemathesis against the service's own OpenAPI schema, served by the real gunicorn server:
generated requests for every operation (admin ones with the token, the Open Inference Protocol
v2 routes under /v2 included) and zero server errors.

The number of examples per operation is bounded so that this stays a few seconds in CI.
"""

import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from support.service import AUTH, TOKEN


@pytest.fixture(scope="module")
def api_schema(start_server, trained_registry, tmp_path_factory):
    reg = Path(shutil.copytree(trained_registry, tmp_path_factory.mktemp("st") / "registry"))
    server = start_server(reg, ADMIN_TOKEN=TOKEN, MAX_BODY_BYTES="200000")
    server.wait_live()
    server.wait_versions(1)
    return schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_anywhere_in_the_api(case):
    headers = AUTH if case.path.startswith("/admin") else None
    response = case.call(headers=headers, timeout=30)
    assert response.status_code < 500 or response.status_code == 503, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}")
    if response.status_code >= 400 and case.path != "/metrics":
        body = response.json()
        assert "Traceback" not in response.text
        if case.path.startswith("/v2"):  # the protocol's error object: one message, no more
            assert list(body) == ["error"] and body["error"], body
        else:
            assert body["error"] and body["detail"]


V2_PATHS = ["/v2", "/v2/health/live", "/v2/health/ready"] + [
    f"/v2/models/{{name}}{version}{operation}" for version in ("", "/versions/{version}")
    for operation in ("", "/ready", "/infer")]


def test_the_v2_routes_are_in_the_schema(api_schema):
    """The raw /v2/models/... routes are documented by hand: the run above covers them only if
    they are there."""
    paths = api_schema.raw_schema["paths"]
    assert [path for path in V2_PATHS if path not in paths] == []
    assert "post" in paths["/v2/models/{name}/infer"] and "get" in paths["/v2/models/{name}"]
