"""Operability: ``LOG_FORMAT=json`` on the real gunicorn server (every line of its output is one
JSON object; a request line has the request's fields), and ``CORS_ORIGINS`` (in-process)."""

import json
import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from support.images import band_images, encode
from support.service import MODEL, inprocess_settings, post_raw

from service.app import create_app

PNG = encode(band_images(1, seed=5)[0][0])


# ----------------------------------------------------------------------------- LOG_FORMAT=json

@pytest.fixture(scope="module")
def json_log(start_server, trained_registry) -> tuple[list[str], str]:
    """The whole output of a JSON-logging server that served a few requests and stopped (its
    lines, and the request id of its /predict request)."""
    server = start_server(trained_registry, LOG_FORMAT="json")
    server.wait_live()
    server.wait_versions(1)
    answer = post_raw(server.client, PNG)
    assert answer.status_code == 200, answer.text
    assert server.client.get("/nowhere").status_code == 404
    # A percent-encoded newline and a brace in the path: still one line, no forged record.
    assert server.client.get('/x%0A{"level":"forged"}').status_code == 404
    request_id = answer.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while request_id not in server.log_path.read_text():
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    server.stop()  # the shutdown lines are part of the output too
    return server.log_path.read_text().splitlines(), request_id


def test_json_log_every_line_is_one_json_object(json_log):
    lines, _ = json_log
    assert len(lines) > 5
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not JSON: {line!r}")
    for record in records:
        assert isinstance(record, dict), record
        assert {"time", "level", "logger", "message", "request_id", "pid"} <= set(record), record
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), record
    loggers = {record["logger"] for record in records}
    assert "gunicorn.error" in loggers and "service.access" in loggers, loggers
    assert all(record["level"] != "forged" for record in records)


def test_json_log_predict_request_line_has_the_request_fields(json_log):
    lines, request_id = json_log
    (line,) = [record for record in map(json.loads, lines)
               if record["logger"] == "service.access" and record["request_id"] == request_id]
    assert line["method"] == "POST" and line["path"] == "/predict" and line["status"] == 200
    assert isinstance(line["latency_ms"], float) and 0 < line["latency_ms"] < 30_000
    assert line["model"] == MODEL and line["version"] == "1"
    assert line["client"].startswith("127.0.0.1:")
    assert line["time"].endswith("+00:00")


def test_json_log_lines_without_a_model_omit_it(json_log):
    records = [json.loads(line) for line in json_log[0]]
    (missing,) = [r for r in records if r["logger"] == "service.access" and r.get("path") == "/nowhere"]
    assert missing["status"] == 404 and "model" not in missing and "version" not in missing
    outside = [r for r in records if r["logger"] == "gunicorn.error"]
    assert outside and all(r["request_id"] is None for r in outside)


# ----------------------------------------------------------------------------- CORS_ORIGINS

ALLOWED, OTHER = "https://app.example", "https://evil.example"


def _client(tmp_path: Path, cors_origins: str) -> TestClient:
    return TestClient(create_app(inprocess_settings(tmp_path / "registry", cors_origins=cors_origins)))


def _preflight(client: TestClient, origin: str, path: str = "/predict"):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_preflight_from_an_allowed_origin_gets_the_headers(tmp_path):
    with _client(tmp_path, f"{ALLOWED}, https://second.example") as client:
        for path in ("/predict", "/admin/promote", "/health/live"):
            response = _preflight(client, ALLOWED, path)
            assert response.status_code == 204, (path, response.text)
            assert response.headers["access-control-allow-origin"] == ALLOWED
            assert "POST" in response.headers["access-control-allow-methods"]
            assert "authorization" in response.headers["access-control-allow-headers"].lower()
        answer = client.get("/health/live", headers={"Origin": ALLOWED})
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


def test_cors_refuses_an_origin_not_listed(tmp_path):
    with _client(tmp_path, ALLOWED) as client:
        response = _preflight(client, OTHER)
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        answer = client.get("/health/live", headers={"Origin": OTHER})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_cors_star_allows_any_origin(tmp_path):
    with _client(tmp_path, "*") as client:
        response = _preflight(client, OTHER)
        assert response.status_code == 204 and response.headers["access-control-allow-origin"] == "*"


def test_cors_unset_sends_no_cors_headers(tmp_path):
    with _client(tmp_path, "") as client:
        for response in (_preflight(client, ALLOWED, "/health/live"),
                         client.get("/health/live", headers={"Origin": ALLOWED})):
            assert not [name for name in response.headers if name.lower().startswith("access-control-")]
