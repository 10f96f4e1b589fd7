"""Any retained version, per request (``service.inference.versions`` and ``Predictor.version``):
the LRU, shared loads, refusals, unknown and pruned versions, the hot-swap interplay, batches
that never mix versions, and drift gauges that stay with production."""

import asyncio
import dataclasses
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from support.images import band_images, encode
from support.service import MODEL, inprocess_settings, json_predict_request, publish_rolled, republish

from artifacts import production
from artifacts.registry import ArtifactValidationError
from service.errors import BadRequestError, UnknownVersionError, VersionRefusedError
from service.inference import drift, versions
from service.inference.drift import DriftSignals
from service.inference.predictor import Predictor
from service.inference.reloader import Reloader
from service.inference.versions import RetainedVersions

# ----------------------------------------------------------------------------- RetainedVersions


class Loads:
    """A stand-in for the loader thread: records each load, may wait for ``gate``, refuses the
    versions in ``refuse`` as a tampered artifact would be refused."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.refuse = set(refuse)

    async def __call__(self, version: str) -> SimpleNamespace:
        self.calls.append(version)
        if self.gate is not None:
            await self.gate.wait()
        if version in self.refuse:
            raise ArtifactValidationError(f"{MODEL} v{version}: weights.pt sha256 does not match")
        return SimpleNamespace(name=MODEL, version=version)


def _retained(tmp_path: Path, *published: str, capacity: int = 3,
              refuse: tuple[str, ...] = ()) -> tuple[RetainedVersions, Loads, list]:
    for version in published:
        (tmp_path / MODEL / version).mkdir(parents=True)
    loads, unloaded = Loads(refuse), []
    retained = RetainedVersions(MODEL, capacity=capacity, registry=tmp_path, load=loads,
                                unload=unloaded.append)
    return retained, loads, unloaded


def _evictions() -> float:
    return REGISTRY.get_sample_value("imgclf_version_evictions_total", {"model": MODEL}) or 0.0


def test_the_lru_keeps_the_most_recently_used_versions_up_to_its_capacity(tmp_path):
    retained, loads, unloaded = _retained(tmp_path, "1", "2", "3", "4", capacity=2)
    evictions = _evictions()

    async def main():
        one = await retained.resolve("1")
        two = await retained.resolve("2")
        assert retained.versions() == ["2", "1"]
        assert await retained.resolve("1") is one  # a hit: no load, now the most recent
        assert retained.versions() == ["1", "2"]
        await retained.resolve("3")  # over the capacity: 2, the least recently used, goes
        assert retained.versions() == ["3", "1"] and unloaded == [two]
        assert await retained.resolve("2") is not two  # loaded again
        assert retained.versions() == ["2", "3"]

    asyncio.run(main())
    assert loads.calls == ["1", "2", "3", "2"]
    assert _evictions() == evictions + 2


def test_concurrent_first_requests_for_a_version_share_one_load(tmp_path):
    retained, loads, _ = _retained(tmp_path, "1", "2")

    async def main():
        loads.gate = asyncio.Event()
        waiters = [asyncio.create_task(retained.resolve("2")) for _ in range(5)]
        await asyncio.sleep(0.01)
        waiters[0].cancel()  # a client going away does not cancel the load the others share
        loads.gate.set()
        results = await asyncio.gather(*waiters[1:])
        assert waiters[0].cancelled()
        assert all(result is results[0] for result in results)
        assert retained.versions() == ["2"]

    asyncio.run(main())
    assert loads.calls == ["2"]


def test_a_refused_version_is_422_remembered_and_no_longer_available(tmp_path):
    retained, loads, _ = _retained(tmp_path, "1", "2", refuse=("2",))

    async def main():
        for _ in range(2):
            with pytest.raises(VersionRefusedError) as refused:
                await retained.resolve("2")
            assert refused.value.status_code == 422 and refused.value.code == "version_refused"
            assert "sha256 does not match" in refused.value.detail
        assert await retained.available() == ["1"]
        assert retained.versions() == []

    asyncio.run(main())
    assert loads.calls == ["2"]  # never loaded again: versions are immutable
    assert "sha256" in retained.refused["2"]


def test_an_unknown_version_is_404_listing_the_available_ones(tmp_path):
    retained, loads, _ = _retained(tmp_path, "1", "2", "3")

    async def main():
        with pytest.raises(UnknownVersionError) as unknown:
            await retained.resolve("7")
        assert unknown.value.status_code == 404
        assert "available versions: 1, 2, 3" in unknown.value.detail
        assert unknown.value.extra == {"available_versions": ["1", "2", "3"]}
        # Published after the listing: found at once, not after LISTING_TTL_S.
        (tmp_path / MODEL / "7").mkdir()
        assert (await retained.resolve("7")).version == "7"

    asyncio.run(main())
    assert loads.calls == ["7"]


@pytest.mark.parametrize("garbage", ["abc", "0", "-1", "", "1.5", "01", "1" * 12])
def test_a_string_that_is_no_version_is_400(tmp_path, garbage):
    retained, loads, _ = _retained(tmp_path, "1")
    with pytest.raises(BadRequestError, match="versions are positive integers"):
        asyncio.run(retained.resolve(garbage))
    assert loads.calls == []


def test_a_pruned_version_is_unloaded_and_answers_404(tmp_path, monkeypatch):
    retained, loads, unloaded = _retained(tmp_path, "1", "2")

    async def main():
        two = await retained.resolve("2")
        shutil.rmtree(tmp_path / MODEL / "2")
        monkeypatch.setattr(versions, "LISTING_TTL_S", 0.0)  # the listing is stale at once
        with pytest.raises(UnknownVersionError, match="available versions: 1$"):
            await retained.resolve("2")
        assert unloaded == [two] and retained.versions() == []

    asyncio.run(main())


def test_hot_reload_takes_what_requests_loaded_and_joins_a_load_in_flight(tmp_path):
    retained, loads, unloaded = _retained(tmp_path, "1", "2", "3")

    async def main():
        two = await retained.resolve("2")
        assert await retained.load("2", keep=False) is two  # the reloader's load: no second one
        retained.promoted(two)  # installed as production: out of the LRU, not unloaded
        assert retained.versions() == [] and unloaded == []
        retained._keep(two)  # never kept while it is production
        assert retained.versions() == []

        loads.gate = asyncio.Event()
        request = asyncio.create_task(retained.resolve("3"))
        await asyncio.sleep(0.01)
        reloader = asyncio.create_task(retained.load("3", keep=False))
        await asyncio.sleep(0.01)
        loads.gate.set()
        assert await request is await reloader

    asyncio.run(main())
    assert loads.calls == ["2", "3"]


# ----------------------------------------------------------------------------- real versions

def _loads(outcome: str) -> float:
    return REGISTRY.get_sample_value("imgclf_version_loads_total",
                                     {"model": MODEL, "outcome": outcome}) or 0.0


async def _started(reg: Path, **overrides) -> Predictor:
    """A started predictor on ``reg`` serving its production version, as the reloader installs it."""
    predictor = Predictor(inprocess_settings(reg, max_batch_wait_ms=20, **overrides))
    await predictor.start()
    await Reloader(predictor).refresh(predictor.slot(None), explicit=True)
    return predictor


def test_requests_for_two_versions_at_once_are_answered_each_by_its_own_version(registry_copy):
    """Mixed versions in flight: each answer comes from the weights of the version it named
    (v2 answers v1's class + 1), so no forward mixed them, and a version's concurrent requests
    still share forwards."""
    assert publish_rolled(registry_copy) == "2"
    pngs = [encode(image) for image in band_images(10, seed=5)[0]]
    batches: list[tuple[str, int]] = []

    async def main():
        predictor = await _started(registry_copy)
        signals = predictor.runner.drift
        predictions = signals.predictions

        def recording(loaded, scores, indices):  # once per forward, on the inference thread
            batches.append((loaded.version, len(scores)))
            predictions(loaded, scores, indices)

        signals.predictions = recording
        slot = predictor.slot(None)
        try:
            requests = [dataclasses.replace(json_predict_request(png), version=version)
                        for version in ("1", "2") for png in pngs]
            await predictor.version(slot, "2")  # loaded first: the requests below queue together
            answers = await asyncio.gather(*(predictor.predict(r) for r in requests))
        finally:
            await predictor.stop()
        return [json.loads(answer) for answer in answers]

    answers = asyncio.run(main())
    ones, twos = answers[:10], answers[10:]
    assert {a["version"] for a in ones} == {"1"} and {a["version"] for a in twos} == {"2"}
    for one, two in zip(ones, twos, strict=True):
        assert two["predictions"][0]["index"] == (one["predictions"][0]["index"] + 1) % 10
        assert two["predictions"][0]["score"] == pytest.approx(one["predictions"][0]["score"])
    assert {version for version, _ in batches} == {"1", "2"}
    assert sum(count for _, count in batches) == 20 and max(count for _, count in batches) > 1


def test_production_is_never_evicted_and_a_tampered_version_is_refused(registry_copy):
    """With room for one other version, versions 2 and 3 take turns in the LRU while
    production (1) serves on, loaded once; a version whose weights changed after publication is
    refused like a hot swap refuses it (422, counted), once, and production keeps serving."""
    for _ in range(3):
        republish(registry_copy)  # versions 2, 3, 4
    weights = registry_copy / MODEL / "4" / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")

    async def main():
        predictor = await _started(registry_copy, max_loaded_versions=1)
        slot = predictor.slot(None)
        production = slot.current
        loaded, refused = _loads("loaded"), _loads("refused")
        try:
            for version in ("2", "3", "2", "1", "3"):
                assert (await predictor.version(slot, version)).version == version
                assert slot.current is production
            assert await predictor.version(slot, None) is production
            assert predictor.loaded_versions(slot) == ["1", "3"]
            assert _loads("loaded") == loaded + 4  # 2, 3, 2, 3: never 1
            for _ in range(2):
                with pytest.raises(VersionRefusedError, match="sha256"):
                    await predictor.admit(None, "4", 1)
            assert _loads("refused") == refused + 1
            assert await predictor.available_versions(slot) == ["1", "2", "3"]
            assert slot.problem is None  # readiness is about production only
        finally:
            await predictor.stop()

    asyncio.run(main())


def test_a_version_requests_loaded_becomes_production_without_a_second_load(registry_copy):
    republish(registry_copy)

    async def main():
        predictor = await _started(registry_copy)
        slot = predictor.slot(None)
        try:
            two = await predictor.version(slot, "2")
            loaded = _loads("loaded")
            production.promote(registry_copy, MODEL, "2")
            await Reloader(predictor).refresh(slot, explicit=False)
            assert slot.current is two and _loads("loaded") == loaded
            assert predictor.loaded_versions(slot) == ["2"]
            # The old production is unloaded; a request for it loads it again.
            assert (await predictor.version(slot, "1")).version == "1"
            assert predictor.loaded_versions(slot) == ["2", "1"]
        finally:
            await predictor.stop()

    asyncio.run(main())


# ----------------------------------------------------------------------------- drift

@dataclasses.dataclass(eq=False)
class _Version:
    """What the drift signals read of a LoadedModel."""

    version: str
    name: str = "versions-drift"
    labels: list = dataclasses.field(default_factory=lambda: ["a", "b"])
    metadata: dict = dataclasses.field(default_factory=lambda: {
        "prediction_reference": {"class_share": {"a": 0.5, "b": 0.5}}})


def test_a_batch_of_another_version_leaves_the_production_gauge_alone(monkeypatch):
    monkeypatch.setattr(drift, "UPDATE_INTERVAL_S", 0.0)
    signals = DriftSignals(window=4, min_samples=4)
    one, two, three = _Version("1"), _Version("2"), _Version("3")
    rows = [[0], [1], [0], [1]]
    scores = [[0.9]] * 4

    def gauge(version: str) -> float | None:
        return REGISTRY.get_sample_value("imgclf_prediction_drift_psi",
                                         {"model": "versions-drift", "version": version})

    signals.serve(one)
    signals.predictions(one, scores, rows)
    signals.predictions(two, scores, rows)  # a ?version=2 batch
    assert gauge("1") == pytest.approx(0.0) and gauge("2") == pytest.approx(0.0)
    signals.predictions(one, scores, rows)
    assert gauge("2") == pytest.approx(0.0)  # nor does production's batch retire version 2's
    signals.serve(three, replacing=one)  # hot swap: the old production reads NaN at once
    assert math.isnan(gauge("1"))
    signals.predictions(one, scores, rows)  # a batch still queued for it writes nothing
    signals.predictions(three, scores, rows)
    assert math.isnan(gauge("1")) and gauge("3") == pytest.approx(0.0)
    signals.retire(two)  # unloaded by the LRU
    assert math.isnan(gauge("2"))
