"""``--normalize none``: pixels scaled to [0, 1] only, as the seeds' ToTensor loop did, and the
artifact says so, so that the service computes exactly what training evaluated."""

import torch

from artifacts import registry
from artifacts.preprocess import EvalTransform
from training.data.splits import load_data
from training.train import main


def test_normalize_none_records_identity_statistics_and_scales_to_unit_range(tiny_config):
    cfg = tiny_config(normalize="none", epochs=1)
    data = load_data(cfg)
    assert data.input_spec.mean == (0.0,) and data.input_spec.std == (1.0,)
    x = EvalTransform(spec=data.input_spec)(data.test.images[:4])
    assert torch.allclose(x, data.test.images[:4].float() / 255)
    result = main(cfg)
    metadata = registry.load_artifact(cfg.registry, "fashion-mnist", result.version).metadata
    assert metadata["input"]["mean"] == [0.0] and metadata["input"]["std"] == [1.0]
    assert metadata["config"]["normalize"] == "none"


def test_the_default_normalises_with_the_training_split_statistics(tiny_config):
    spec = load_data(tiny_config()).input_spec
    assert spec.mean != (0.0,) and spec.std != (1.0,)
