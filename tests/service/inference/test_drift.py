"""Drift signals (``service.inference.drift``): the PSI against a hand computation, the sliding
window, counters aggregated per batch, and through the real server the metrics a Prometheus
scrape reads."""

import base64
import math
import shutil

import pytest
import torch
from prometheus_client import REGISTRY
from support.images import band_images, encode
from support.service import MODEL

from artifacts import production
from artifacts.registry import load_artifact, publish
from service.inference import drift
from service.inference.drift import EPSILON, DriftMonitor, DriftSignals, psi, reference_shares
from service.inference.loading import load_model


def test_psi_matches_a_hand_computation():
    # (0.5 - 0.25) ln(0.5 / 0.25) + (0.5 - 0.75) ln(0.5 / 0.75)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.1] * 10, [0.1] * 10) == 0.0
    # An empty class counts as EPSILON: large, finite. (1 - .5) ln(1 / .5) + (eps - .5) ln(eps / .5)
    expected = 0.5 * math.log(2) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(expected)
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(4.6044, abs=1e-4)


def test_reference_shares_follow_the_label_order_and_refuse_nonsense():
    labels = ["a", "b", "c"]
    reference = {"prediction_reference": {"class_share": {"c": 0.5, "a": 0.25, "b": 0.25},
                                          "samples": 100, "split": "test"}}
    assert reference_shares(reference, labels) == [0.25, 0.25, 0.5]
    assert reference_shares({}, labels) is None  # published before the reference existed
    for broken in ({"class_share": "x"}, {"class_share": {"a": -1, "b": 2}}, {"nope": 1},
                   {"class_share": {"a": 0}}):
        assert reference_shares({"prediction_reference": broken}, labels) is None


def _monitor(version: str, reference=(0.5, 0.5), *, window=10, min_samples=4) -> DriftMonitor:
    return DriftMonitor("drift-test", version, ["a", "b"], list(reference) if reference else None,
                        window=window, min_samples=min_samples)


def _value(metric: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(metric, {"model": "drift-test", **labels})


def test_the_window_keeps_the_last_predictions_and_psi_waits_for_min_samples(monkeypatch):
    monkeypatch.setattr(drift, "UPDATE_INTERVAL_S", 0.0)
    monitor = _monitor("1")
    monitor.observe([0, 0, 0], [0.9, 0.9, 0.9])
    assert math.isnan(monitor.psi())
    assert _value("imgclf_prediction_drift_psi", version="1") is None  # never written: not NaN
    monitor.observe([0], [0.9])  # 4 predictions, all class a
    assert monitor.psi() == pytest.approx(psi([1.0, 0.0], [0.5, 0.5]))
    assert _value("imgclf_prediction_drift_psi", version="1") == pytest.approx(monitor.psi())
    monitor.observe([1] * 15, [0.6] * 15)  # more than the window: only the last 10 count
    assert monitor.psi() == pytest.approx(psi([0.0, 1.0], [0.5, 0.5]))
    monitor.observe([0] * 5, [0.6] * 5)  # the ring now holds 5 of each
    assert monitor.psi() == pytest.approx(0.0)
    assert _value("imgclf_prediction_drift_psi", version="1") == pytest.approx(0.0)


def test_without_a_reference_there_is_no_gauge_but_counters_still_count():
    monitor = _monitor("2", reference=None)
    monitor.observe([0, 1, 1, 1, 1], [0.3, 0.6, 0.7, 0.8, 0.99])
    assert math.isnan(monitor.psi())
    assert _value("imgclf_prediction_drift_psi", version="2") is None
    assert _value("imgclf_predictions_total", version="2", label="b") == 4
    assert _value("imgclf_prediction_confidence_count", version="2") == 5
    assert _value("imgclf_prediction_confidence_bucket", version="2", le="0.5") == 1


def test_class_counts_are_one_increment_per_class_present_in_a_batch():
    monitor = _monitor("3")

    class Spy:
        def __init__(self):
            self.calls = []

        def inc(self, amount=1):
            self.calls.append(amount)

    spies = monitor._predictions = [Spy(), Spy()]
    monitor.observe([1, 1, 0, 1, 1, 1], [0.9] * 6)
    monitor.observe([1, 1], [0.9] * 2)
    assert spies[0].calls == [1] and spies[1].calls == [5, 2]


def test_the_gauge_follows_the_version_that_serves(monkeypatch, trained_registry):
    """A newer version's first batch retires the older one's gauge (NaN); a batch of the old
    version (queued before the swap) moves it back, and the last one wins."""
    monkeypatch.setattr(drift, "UPDATE_INTERVAL_S", 0.0)
    old = load_model(trained_registry, MODEL, "1", device=torch.device("cpu"), warmup_batch=1)
    new = load_model(trained_registry, MODEL, "1", device=torch.device("cpu"), warmup_batch=1)
    reference = {"class_share": {label: 0.1 for label in old.labels}, "samples": 10, "split": "test"}
    old.metadata = {**old.metadata, "version": "901", "prediction_reference": reference}
    new.metadata = {**new.metadata, "version": "902", "prediction_reference": reference}
    signals = DriftSignals(window=10, min_samples=10)
    rows = [[i % 10] for i in range(10)], [[i % 10, (i + 1) % 10] for i in range(10)]
    scores = [[0.9] for _ in range(10)]

    def gauge(version):
        return REGISTRY.get_sample_value("imgclf_prediction_drift_psi",
                                         {"model": MODEL, "version": version})

    signals.predictions(old, scores, rows[0])
    assert gauge("901") == pytest.approx(0.0)
    signals.predictions(new, scores, rows[1])
    assert math.isnan(gauge("901")) and gauge("902") == pytest.approx(0.0)
    signals.predictions(old, scores, rows[0])
    assert gauge("901") == pytest.approx(0.0) and math.isnan(gauge("902"))
    # A hot swap retires the old version's gauge at once, before any batch of the new one: a
    # worker the load balancer no longer sends traffic to must not keep showing stale drift.
    signals.retire(old)
    assert math.isnan(gauge("901"))


# ----------------------------------------------------------------------------- the real server

@pytest.fixture(scope="module")
def drift_server(start_server, trained_registry, tmp_path_factory):
    """The real server on v2: v1's weights with a test-split reference that expects class 0
    only, so that band images of every class drift."""
    reg = shutil.copytree(trained_registry, tmp_path_factory.mktemp("drift") / "registry")
    artifact = load_artifact(reg, MODEL, "1")
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    shares = {label: 0.0 for label in artifact.class_labels} | {artifact.class_labels[0]: 1.0}
    metadata["prediction_reference"] = {"class_share": shares, "samples": 100, "split": "test"}
    production.promote(reg, MODEL, publish(reg, metadata, artifact.model.state_dict()))
    server = start_server(reg, DRIFT_WINDOW="20", DRIFT_MIN_SAMPLES="10")
    server.wait_live()
    server.wait_versions(2)
    return server


def test_metrics_show_predictions_confidence_and_the_drift_gauge(drift_server):
    arrays, _ = band_images(10, seed=8)
    body = {"images": [base64.b64encode(encode(a)).decode() for a in arrays]}
    for _ in range(8):  # 80 images over fresh connections: both workers fill their window
        with drift_server.fresh() as client:
            assert client.post("/predict", json=body).status_code == 200
    counted = drift_server.metric(rf'^imgclf_predictions_total\{{.*model="{MODEL}".*version="2"')
    assert len(counted) == 10 and sum(counted) == 80  # every class label has its series
    assert drift_server.metric(rf'^imgclf_prediction_confidence_count\{{.*model="{MODEL}".*version="2"') == [80]

    def gauge():
        return drift_server.metric(rf'^imgclf_prediction_drift_psi\{{.*model="{MODEL}".*version="2"')

    drift_server.wait_until(lambda: len(gauge()) == 1, "the drift gauge", timeout=10)
    # Every class predicted against a reference of class 0 only: far beyond the 0.5 alert.
    assert gauge()[0] > 1.0


def test_inputs_of_another_size_or_mode_are_counted(drift_server):
    def mismatches(reason):
        return sum(drift_server.metric(
            rf'^imgclf_input_mismatch_total\{{.*model="{MODEL}".*reason="{reason}"'))

    before = mismatches("size"), mismatches("mode")
    rgb = encode(band_images(1, seed=9, size=32, channels=3)[0][0])  # 32x32 RGB
    grey = encode(band_images(1, seed=9)[0][0])  # 28x28 L: as trained
    response = drift_server.client.post("/predict", files=[("file", ("a.png", rgb, "image/png")),
                                                           ("file", ("b.png", grey, "image/png"))])
    assert response.status_code == 200, response.text
    assert (mismatches("size"), mismatches("mode")) == (before[0] + 1, before[1] + 1)
