"""The admin endpoints against a registry the test edits behind the service's back (a
read-only registry, a promotion history, malformed metadata, an invalid pointer), through
Litestar's test client."""

import errno
from concurrent.futures import ThreadPoolExecutor

from litestar.testing import TestClient
from support.images import band_images, encode
from support.service import AUTH, MODEL, TOKEN, inprocess_settings, post_raw, republish, wait_ready

from artifacts import production, registry
from service.app import create_app

PNG = encode(band_images(1, seed=2)[0][0])


def test_admin_endpoints_are_disabled_without_a_token(registry_copy):
    with TestClient(create_app(inprocess_settings(registry_copy))) as client:
        response = client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 403 and response.json()["error"] == "admin_disabled"
        assert "ADMIN_TOKEN" in response.json()["detail"]


def test_read_only_registry_answers_409_not_500(registry_copy, monkeypatch):
    production.promote(registry_copy, MODEL, republish(registry_copy))

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(production, "atomic_write_bytes", read_only)
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        wait_ready(client)
        for path, body in (("/admin/rollback", None), ("/admin/promote", {"version": "1"})):
            response = client.post(path, headers=AUTH, json=body)
            assert response.status_code == 409, response.text
            assert response.json()["error"] == "registry_read_only"
            assert "read-only" in response.json()["detail"]
        assert post_raw(client, PNG).json()["version"] == "2"  # still serving


def _admin(client, path, body=None):
    return client.post(path, headers=AUTH, json=body)


def test_admin_rollback_walks_back_through_the_history(registry_copy):
    for _ in range(2):
        production.promote(registry_copy, MODEL, republish(registry_copy))  # production 3
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        wait_ready(client)
        assert [_admin(client, "/admin/rollback").json()["production"] for _ in range(2)] == [
            "2", "1"]
        response = _admin(client, "/admin/rollback")
        assert response.status_code == 409 and "no previous production" in response.text
        for version in ("2", "3"):
            assert _admin(client, "/admin/promote", {"version": version}).status_code == 200
        with ThreadPoolExecutor(2) as pool:  # two operators at once: two steps back, not one
            answers = list(pool.map(lambda _: _admin(client, "/admin/rollback"), range(2)))
        assert sorted(a.json()["production"] for a in answers) == ["1", "2"]
        assert registry.read_production(registry_copy, MODEL) == "1"
        assert post_raw(client, PNG).json()["version"] == "1"


def test_promote_refuses_malformed_metadata_with_422_and_keeps_serving(registry_copy):
    bad = republish(registry_copy, architecture_kwargs={"bogus": 1})
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        wait_ready(client)
        response = _admin(client, "/admin/promote", {"version": bad})
        assert response.status_code == 422, response.text
        assert "does not describe a model" in response.json()["detail"]
        assert registry.read_production(registry_copy, MODEL) == "1"
        assert post_raw(client, PNG).json()["version"] == "1"


def test_an_invalid_pointer_answers_409_to_reload_and_promote_repairs_it(registry_copy):
    republish(registry_copy)
    with TestClient(create_app(inprocess_settings(registry_copy, admin_token=TOKEN))) as client:
        wait_ready(client)
        (registry_copy / MODEL / registry.POINTER_FILE).write_text("v2\n")
        assert _admin(client, "/admin/reload").status_code == 409
        assert _admin(client, "/admin/promote", {"version": "2"}).status_code == 200
        assert registry.read_production(registry_copy, MODEL) == "2"
        assert _admin(client, "/admin/rollback").json()["production"] == "1"
