"""Several replicas on one registry, as a Kubernetes Service (or the compose ``scale`` profile)
runs them, without Docker: two real gunicorn servers on two ports share one registry directory.
An admin promote or rollback sent to one of them is served by every worker of the other within
``RELOAD_INTERVAL_S`` (plus the time to load a model), and no request to either fails meanwhile.
"""

import shutil
import threading
import time

import pytest
from support.images import band_images, encode
from support.service import AUTH, MODEL, TOKEN, post_raw, republish

from artifacts import registry

RELOAD_INTERVAL_S = 0.5
# The poll period plus one model load and validation (golden set, warm-up) on a busy 2-core CI
# machine: a worker polls at most RELOAD_INTERVAL_S after the pointer changed, then loads.
FOLLOW_WITHIN_S = RELOAD_INTERVAL_S + 5.0
PNG = encode(band_images(1, seed=6)[0][0])

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def replicas(start_server, trained_registry, tmp_path_factory):
    """Servers A and B (2 workers each) on one private, writable copy of the registry, holding
    v1 (production) and v2 (published, not promoted)."""
    reg = tmp_path_factory.mktemp("shared") / "registry"
    shutil.copytree(trained_registry, reg)
    assert republish(reg) == "2"
    servers = [start_server(reg, ADMIN_TOKEN=TOKEN, RELOAD_INTERVAL_S=str(RELOAD_INTERVAL_S))
               for _ in range(2)]
    for server in servers:
        server.wait_live()
        server.wait_versions(1)
    return servers, reg


class Load:
    """Requests to both servers from 2 threads each (no keep-alive, so they spread over the
    workers) until stopped: every status and every version that answered."""

    def __init__(self, servers) -> None:
        self.statuses: list[int] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server,), daemon=True)
                         for server in servers for _ in range(2)]

    def _run(self, server) -> None:
        with server.fresh() as client:
            while not self._stop.is_set():
                response = post_raw(client, PNG)
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.versions.append(response.json()["version"])

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def _follow_time(servers, version: int, since: float) -> list[float]:
    """Seconds after ``since`` at which every worker of each server served ``version``."""
    times = []
    for server in servers:
        server.wait_versions(version, timeout=FOLLOW_WITHIN_S + 10)
        times.append(time.monotonic() - since)
    return times


def test_admin_promote_on_one_server_is_served_by_the_other(replicas):
    (a, b), reg = replicas
    with Load([a, b]) as load:
        time.sleep(0.5)  # both under load before the swap
        started = time.monotonic()
        response = a.client.post("/admin/promote", headers=AUTH, json={"model": MODEL, "version": "2"})
        assert response.status_code == 200, response.text
        assert (response.json()["production"], response.json()["loaded"]) == ("2", "2")
        follow_a, follow_b = _follow_time([a, b], 2, started)
        time.sleep(0.5)  # answers from the new version under load, on both
    assert registry.read_production(reg, MODEL) == "2"
    print(f"promote on A: A on v2 after {follow_a:.2f} s, B after {follow_b:.2f} s; {len(load.statuses)} requests")
    assert follow_b <= FOLLOW_WITHIN_S, f"B served v2 {follow_b:.2f} s after A's promote"
    assert set(load.statuses) == {200}, sorted(set(load.statuses))
    assert load.versions[-1] == "2" and "1" in load.versions
    for server in (a, b):
        assert post_raw(server.client, PNG).json()["version"] == "2"


def test_admin_rollback_on_the_other_server_is_served_by_the_first(replicas):
    (a, b), reg = replicas
    with Load([a, b]) as load:
        time.sleep(0.5)
        started = time.monotonic()
        response = b.client.post("/admin/rollback", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["production"] == "1"
        follow_b, follow_a = _follow_time([b, a], 1, started)
        time.sleep(0.5)
    assert registry.read_production(reg, MODEL) == "1"
    print(f"rollback on B: B on v1 after {follow_b:.2f} s, A after {follow_a:.2f} s; {len(load.statuses)} requests")
    assert follow_a <= FOLLOW_WITHIN_S, f"A served v1 {follow_a:.2f} s after B's rollback"
    assert set(load.statuses) == {200}, sorted(set(load.statuses))
    assert load.versions[-1] == "1" and "2" in load.versions
