"""The page's files and the docs page, in process (no browser): the security headers on every
one of them, what ``GET /web/config`` says about feedback, nothing loaded from elsewhere, no
inline script, and the vendored Swagger UI unchanged from its release."""

import hashlib
import re
from pathlib import Path

import pytest
from litestar.testing import TestClient
from support.service import inprocess_settings

from service.api.web import CONTENT_SECURITY_POLICY, STATIC_DIR
from service.app import create_app

VENDOR = STATIC_DIR / "vendor" / "swagger-ui"
OUR_FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file() and VENDOR not in p.parents)
PAGES = ["/", "/schema", "/schema/swagger"]
ASSETS = ["/static/app.js", "/static/classify.js", "/static/app.css", "/static/favicon.svg",
          "/static/swagger-init.js", "/static/vendor/swagger-ui/swagger-ui-bundle.js",
          "/static/vendor/swagger-ui/swagger-ui.css"]


@pytest.fixture(scope="module")
def client(trained_registry, tmp_path_factory):
    settings = inprocess_settings(trained_registry, feedback_token="a-token",
                                  feedback_dir=tmp_path_factory.mktemp("feedback"))
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_policy_allows_this_origin_only_and_no_inline_script():
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == directives["object-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", PAGES + ASSETS)
def test_page_and_assets_carry_the_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_files_have_their_content_types(client):
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/favicon.svg").headers["content-type"].startswith("image/svg+xml")


def test_a_missing_file_is_the_usual_json_404(client):
    response = client.get("/static/nothing.js")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert client.get("/static/..%2F..%2Fapi%2Fweb.py").status_code == 404  # no way out


def test_web_config_offers_feedback_when_a_token_is_set(client):
    response = client.get("/web/config")
    assert response.json() == {"feedback": True, "feedback_detail": None}
    assert "no-store" in response.headers["cache-control"]


@pytest.mark.parametrize("tokens", [{}, {"feedback_token": "same", "admin_token": "same"}],
                         ids=["no-token", "token-equals-admin"])
def test_web_config_says_why_feedback_is_off(trained_registry, tokens):
    """The answer comes from the guard of POST /feedback itself, so the two never disagree."""
    with TestClient(create_app(inprocess_settings(trained_registry, **tokens))) as client:
        config = client.get("/web/config").json()
        refused = client.post("/feedback", content=b"", headers={"Content-Type": "image/png"})
    assert config["feedback"] is False and "FEEDBACK_TOKEN" in config["feedback_detail"]
    assert refused.status_code == 403 and refused.json()["detail"] == config["feedback_detail"]


def test_the_web_routes_stay_out_of_the_api_schema(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/static", "/web"))]


@pytest.mark.parametrize("path", PAGES)
def test_pages_have_no_inline_script_or_style(client, path):
    html = client.get(path).text
    scripts = re.findall(r"<script\b[^>]*>", html, re.IGNORECASE)
    assert scripts and all(" src=" in tag for tag in scripts), scripts
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html  # no CDN, no remote favicon


def test_the_page_and_the_docs_link_to_each_other(client):
    assert 'href="/schema"' in client.get("/").text
    assert 'href="/"' in client.get("/schema").text


@pytest.mark.parametrize("path", OUR_FILES, ids=lambda p: p.name)
def test_our_files_load_nothing_from_elsewhere(path: Path):
    text = path.read_text(encoding="utf-8")
    remote = [url for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", text)
              if url != "http://www.w3.org/2000/svg"]  # SVG's namespace, never fetched
    assert remote == []
    assert "eval(" not in text and "new Function" not in text


def test_the_vendored_swagger_ui_is_the_release_its_readme_names():
    readme = (VENDOR / "README.md").read_text()
    hashes = dict(re.findall(r"^\| `([\w.-]+)` \| `([0-9a-f]{64})` \|$", readme, re.MULTILINE))
    assert set(hashes) == {"swagger-ui-bundle.js", "swagger-ui.css"}
    for name, expected in hashes.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == expected, name
    assert (VENDOR / "LICENSE").read_text().lstrip().startswith("Apache License")
