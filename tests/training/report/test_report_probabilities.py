"""The final test pass keeps its probabilities (training.engine.collect_probabilities), and the
loss and accuracy derived from them agree with evaluate's."""

import pytest
import torch
from torch import nn

import models
from artifacts.preprocess import EvalTransform, InputSpec
from training.data.batches import BatchLoader
from training.data.sources import ImageTensors
from training.engine import Runtime, collect_probabilities, evaluate, stats_from_probabilities

SPEC = InputSpec(channels=1, height=8, width=8, mean=(0.5,), std=(0.25,))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    data = ImageTensors(torch.randint(0, 256, (37, 1, 8, 8), dtype=torch.uint8, generator=generator),
                        torch.randint(0, 3, (37,), generator=generator))
    model = models.build_model("mlp", num_classes=3, in_channels=1, image_size=(8, 8))
    return model, data, BatchLoader(data, batch_size=10, shuffle=False)


def test_probabilities_are_float32_cpu_rows_in_loader_order(setup):
    model, data, loader = setup
    model.train()  # collect_probabilities must switch to eval() itself
    probabilities, labels = collect_probabilities(model, loader, transform=EvalTransform(spec=SPEC),
                                                  runtime=Runtime(device=torch.device("cpu")))
    assert probabilities.dtype == torch.float32 and probabilities.shape == (37, 3)
    assert probabilities.device.type == "cpu" and labels.dtype == torch.int64
    assert torch.equal(labels, data.labels)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(37), atol=1e-5)
    model.eval()
    with torch.inference_mode():
        expected = model(EvalTransform(spec=SPEC)(data.images)).softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6)


def test_stats_from_probabilities_match_evaluate(setup):
    model, _, loader = setup
    runtime, transform = Runtime(device=torch.device("cpu")), EvalTransform(spec=SPEC)
    probabilities, labels = collect_probabilities(model, loader, transform=transform, runtime=runtime)
    stats = stats_from_probabilities(probabilities, labels)
    reference = evaluate(model, loader, criterion=nn.CrossEntropyLoss(), transform=transform, runtime=runtime)
    assert stats["samples"] == 37 == reference["samples"]
    assert stats["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-9)
    assert stats["loss"] == pytest.approx(reference["loss"], abs=1e-5)


def test_bf16_autocast_still_gives_float32_probabilities(setup):
    model, _, loader = setup
    probabilities, _ = collect_probabilities(model, loader, transform=EvalTransform(spec=SPEC),
                                             runtime=Runtime(device=torch.device("cpu"),
                                                             autocast_dtype=torch.bfloat16))
    assert probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(probabilities)), atol=1e-5)


def test_a_confident_mistake_costs_a_bounded_loss():
    probabilities = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    stats = stats_from_probabilities(probabilities, torch.tensor([1, 0]))
    assert stats["loss"] == pytest.approx((-torch.log(torch.tensor(1e-12)).item() + 0.693147) / 2, rel=1e-5)
    assert stats["accuracy"] == 0.5 and stats["samples"] == 2
    assert stats_from_probabilities(torch.empty(0, 2), torch.empty(0, dtype=torch.int64))["samples"] == 0
