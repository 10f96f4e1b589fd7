"""``GET /models/{name}/report`` and its pictures: what the loaded version was published with,
checked against its sha256, with clean 404s and a clean error for a tampered file."""

import hashlib
import io
import json

import pytest
from litestar.testing import TestClient
from PIL import Image
from support.service import MODEL, assert_clean_error, inprocess_settings, wait_ready

from artifacts import production
from artifacts.registry import load_artifact, model_dir, publish
from service.app import create_app

PICTURES = ("confusion", "reliability", "mistakes")


def _png(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (colour, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def _report(labels: list[str]) -> dict:
    """A report in the format training publishes (training/report)."""
    return {
        "samples": 100, "accuracy": 0.9,
        "classes": {label: {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10} for label in labels},
        "macro": {"precision": 0.9, "recall": 0.9, "f1": 0.9},
        "confusion": {"labels": labels, "matrix": [[9 if i == j else 0 for j in labels] for i in labels]},
        "calibration": {"ece": 0.03, "bins": [{"lower": 0.9, "upper": 1.0, "count": 80, "accuracy": 0.95,
                                               "confidence": 0.96}]},
        "mistakes": [{"index": 3, "label": labels[0], "predicted": labels[1], "score": 0.97}],
        "predicted_share": {label: 1 / len(labels) for label in labels},
        "sources": {"fashion-mnist": 100},
    }


@pytest.fixture
def reported(registry_copy):
    """The registry with v2 in production: v1's weights published with a report and pictures."""
    artifact = load_artifact(registry_copy, MODEL, "1")
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    files = {"report.json": json.dumps(_report(artifact.class_labels)).encode(),
             **{f"{name}.png": _png(40 * i) for i, name in enumerate(PICTURES)}}
    version = publish(registry_copy, metadata, artifact.model.state_dict(), files=files)
    production.promote(registry_copy, MODEL, version)
    return registry_copy, files


@pytest.fixture
def client(reported):
    with TestClient(create_app(inprocess_settings(reported[0]))) as client:
        wait_ready(client)
        yield client


def test_the_report_of_the_loaded_version_as_json(client, reported):
    response = client.get(f"/models/{MODEL}/report")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == (MODEL, "2")
    published = json.loads(reported[1]["report.json"])
    assert {k: body[k] for k in published} == published
    etag = f'"{hashlib.sha256(reported[1]["report.json"]).hexdigest()}"'
    assert response.headers["etag"] == etag
    assert client.get(f"/models/{MODEL}/report", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("picture", PICTURES)
def test_each_picture_as_png_with_its_sha256_as_etag(client, reported, picture):
    response = client.get(f"/models/{MODEL}/report/{picture}.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content == reported[1][f"{picture}.png"]
    etag = f'"{hashlib.sha256(response.content).hexdigest()}"'
    assert response.headers["etag"] == etag and response.headers["cache-control"] == "no-cache"
    again = client.get(f"/models/{MODEL}/report/{picture}.png", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    assert Image.open(io.BytesIO(response.content)).format == "PNG"


def test_unknown_model_or_picture_is_404_naming_the_choices(client):
    body = assert_clean_error(client.get("/models/nope/report"), 404)
    assert body["error"] == "unknown_model" and MODEL in body["detail"]
    assert_clean_error(client.get("/models/nope/report/confusion.png"), 404)
    body = assert_clean_error(client.get(f"/models/{MODEL}/report/roc.png"), 404)
    assert body["error"] == "report_not_found"
    assert "confusion.png, reliability.png, mistakes.png" in body["detail"]
    assert_clean_error(client.get(f"/models/{MODEL}/report/confusion"), 404)


def test_a_version_published_without_a_report_is_404(registry_copy):
    artifact = load_artifact(registry_copy, MODEL, "1")
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    production.promote(registry_copy, MODEL, publish(registry_copy, metadata, artifact.model.state_dict()))
    with TestClient(create_app(inprocess_settings(registry_copy))) as client:  # v2: no files at all
        wait_ready(client)
        for path in ("", "/confusion.png"):
            body = assert_clean_error(client.get(f"/models/{MODEL}/report{path}"), 404)
            assert body["error"] == "report_not_found" and "v2 was published without" in body["detail"]


@pytest.mark.parametrize("file_name", ["report.json", "mistakes.png"])
def test_a_tampered_report_file_is_an_error_that_says_so(client, reported, file_name):
    path = model_dir(reported[0], MODEL) / "2" / file_name
    path.write_bytes(path.read_bytes()[:-3])
    url = f"/models/{MODEL}/report" + ("" if file_name == "report.json" else f"/{file_name}")
    body = assert_clean_error(client.get(url), 500)
    assert body["error"] == "artifact_corrupt"
    assert f"{MODEL}/2/{file_name} sha256" in body["detail"] and "modified or truncated" in body["detail"]
    path.unlink()
    body = assert_clean_error(client.get(url), 500)
    assert "listed in metadata.json but missing" in body["detail"]


def test_the_report_endpoints_are_in_the_openapi_schema(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/models/{name}/report" in paths and "/models/{name}/report/{picture}" in paths
    picture = paths["/models/{name}/report/{picture}"]["get"]
    assert "image/png" in picture["responses"]["200"]["content"]
    assert {"404", "500"} <= set(picture["responses"])
