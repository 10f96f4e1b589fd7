"""The golden set on every load and hot swap (``service.inference.loading``): a version must
reproduce the probabilities it was published with, on the serving device and dtype, or it is
refused, named, counted, and the old version keeps serving."""

import copy
import logging

import pytest
import torch
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from support.images import band_images, encode
from support.service import MODEL, inprocess_settings, post_raw, wait_ready

from artifacts import production
from artifacts.devices import cpu_has_bf16
from artifacts.golden import GOLDEN_FILE, MIN_MARGIN, TOLERANCES, GoldenSet, GoldenSetError, golden_probabilities
from artifacts.registry import ArtifactValidationError, load_artifact, model_dir, publish
from service.app import create_app
from service.inference.loading import LoadedModel, load_model

CPU = torch.device("cpu")


def golden_of(model: torch.nn.Module, spec, *, count: int = 32) -> GoldenSet:
    """A golden set of ``model``: held-out band images whose top-1 leads by ``MIN_MARGIN``, as
    training picks them."""
    arrays, labels = band_images(count * 4, seed=21)
    images = torch.from_numpy(arrays).unsqueeze(1)  # (N, 1, 28, 28) uint8
    probabilities = golden_probabilities(model, spec, images)
    top2 = probabilities.topk(2, dim=1).values
    keep = ((top2[:, 0] - top2[:, 1]) >= MIN_MARGIN).nonzero().flatten()[:count]
    assert len(keep) >= 8, "the trained test model is not confident enough for a golden set"
    return GoldenSet(images[keep].contiguous(), probabilities[keep].contiguous(),
                     torch.from_numpy(labels).long()[keep])


def shifted(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its output rows rolled by one class: as confident, every top-1 different
    (other weights)."""
    other = copy.deepcopy(model)
    last = [m for m in other.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.roll(1, dims=0))
        last.bias.copy_(last.bias.roll(1, dims=0))
    return other


def publish_golden(reg, *, golden_model=None, promote: bool = False) -> str:
    """v1's weights published again with a golden set (made from ``golden_model``, default the
    weights themselves); returns the new version."""
    artifact = load_artifact(reg, MODEL, "1")
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    golden = golden_of(golden_model or artifact.model, artifact.input_spec)
    version = publish(reg, metadata, artifact.model.state_dict(),
                      files={GOLDEN_FILE: golden.to_bytes()})
    if promote:
        production.promote(reg, MODEL, version)
    return version


def golden_failures() -> float:
    return REGISTRY.get_sample_value("imgclf_golden_set_failures_total", {"model": MODEL}) or 0.0


def test_a_version_with_its_golden_set_loads_and_says_so(registry_copy, caplog):
    version = publish_golden(registry_copy)
    with caplog.at_level(logging.INFO, logger="service.inference.loading"):
        loaded = load_model(registry_copy, MODEL, version, device=CPU, warmup_batch=4)
    assert loaded.golden_set and loaded.path == model_dir(registry_copy, MODEL) / version
    assert "golden set reproduced" in caplog.text


def test_golden_set_from_other_weights_is_refused_named_and_counted(registry_copy):
    bad = publish_golden(registry_copy, golden_model=shifted(load_artifact(registry_copy, MODEL, "1").model))
    before = golden_failures()
    with pytest.raises(GoldenSetError, match=rf"{MODEL} v{bad}.*top-1 differs"):
        load_model(registry_copy, MODEL, bad, device=CPU, warmup_batch=4)
    assert golden_failures() == before + 1


def test_the_serving_path_itself_is_checked(registry_copy, monkeypatch):
    """The fp32 CPU check of ``load_artifact`` passes; what the served model computes (device,
    dtype, channels-last) must reproduce the set too."""
    version = publish_golden(registry_copy)
    served = LoadedModel.probabilities

    def off_by_a_little(self, batch):
        probabilities = served(self, batch)
        return probabilities + 0.01 * (probabilities == probabilities.max(dim=1, keepdim=True).values)

    monkeypatch.setattr(LoadedModel, "probabilities", off_by_a_little)
    before = golden_failures()
    with pytest.raises(GoldenSetError, match=rf"v{version} on cpu in float32 fails its golden set: "
                                             r"probabilities differ .* \(tolerance 1e-03"):
        load_model(registry_copy, MODEL, version, device=CPU, warmup_batch=4)
    assert golden_failures() == before + 1


def test_a_tampered_golden_set_is_refused_by_sha256(registry_copy):
    version = publish_golden(registry_copy)
    path = model_dir(registry_copy, MODEL) / version / GOLDEN_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    before = golden_failures()
    with pytest.raises(ArtifactValidationError, match=r"golden\.pt sha256 .* does not match") as refused:
        load_model(registry_copy, MODEL, version, device=CPU, warmup_batch=4)
    assert not isinstance(refused.value, GoldenSetError)  # refused as any tampered file
    assert golden_failures() == before


def test_a_version_published_before_golden_sets_loads_with_a_note(registry_copy, caplog):
    artifact = load_artifact(registry_copy, MODEL, "1")
    metadata = {k: v for k, v in artifact.metadata.items()
                if k not in ("version", "created_at", "weights_sha256", "files")}
    legacy = publish(registry_copy, metadata, artifact.model.state_dict())  # no beside-files
    production.promote(registry_copy, MODEL, legacy)
    with caplog.at_level(logging.WARNING, logger="service.inference.loading"):
        loaded = load_model(registry_copy, MODEL, legacy, device=CPU, warmup_batch=4)
    assert not loaded.golden_set
    [warning] = [r for r in caplog.records if "no golden set" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    with TestClient(create_app(inprocess_settings(registry_copy))) as client:
        wait_ready(client)
        [info] = client.get("/models").json()["models"]
        assert info["version"] == legacy and info["golden_set"] is False


@pytest.mark.skipif(not cpu_has_bf16(), reason="the CPU has no native bf16 (AMX or AVX512-BF16)")
def test_a_bf16_served_model_passes_its_fp32_golden_set(registry_copy):
    version = publish_golden(registry_copy)
    loaded = load_model(registry_copy, MODEL, version, device=CPU, warmup_batch=4, precision="bf16")
    assert loaded.dtype == torch.bfloat16 and loaded.golden_set
    golden = load_artifact(registry_copy, MODEL, version).golden
    with torch.inference_mode():
        deviation = float((loaded.probabilities(golden.images) - golden.probabilities).abs().max())
    assert 0 < deviation < TOLERANCES[torch.bfloat16] / 5  # bf16 rounds, well inside the tolerance


def test_a_golden_mismatch_refuses_the_hot_swap_and_the_old_version_keeps_serving(
        start_server, registry_copy):
    """The real gunicorn server: both workers refuse the new production version by name,
    count it, say why in readiness, and keep answering with the old one."""
    good = publish_golden(registry_copy, promote=True)
    server = start_server(registry_copy)
    server.wait_live()
    server.wait_versions(int(good))
    bad = publish_golden(registry_copy, golden_model=shifted(load_artifact(registry_copy, MODEL, "1").model),
                         promote=True)
    server.wait_until(lambda: sum(server.metric(
        rf'^imgclf_golden_set_failures_total\{{.*model="{MODEL}"')) == 2, "both workers refuse")
    assert server.versions() == [float(good)] * 2
    assert sum(server.metric(rf'^imgclf_model_reloads_total\{{.*model="{MODEL}".*outcome="refused"')) == 2
    png = encode(band_images(1, seed=3)[0][0])
    for _ in range(4):
        with server.fresh() as client:
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            assert f"version {bad} was refused" in ready.json()["detail"]
            assert "golden set" in ready.json()["detail"]
            assert post_raw(client, png).json()["version"] == good
    assert f"refused {MODEL} v{bad}, still serving v{good}" in server.logs()
