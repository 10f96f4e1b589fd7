import pytest
import torch
from torch import nn

import models
from models.backbones import load_pretrained


@pytest.mark.parametrize("name", models.available())
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_architecture_outputs_logits_per_class(name, shape):
    channels, height, width = shape
    model = models.build_model(name, num_classes=7, in_channels=channels, image_size=(height, width))
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, channels, height, width))
    assert out.shape == (2, 7)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(models.UnknownArchitectureError, match="Valid models: .*mlp.*resnet18"):
        models.build_model("vgg99", num_classes=10, in_channels=1, image_size=(28, 28))


def test_mlp_is_the_seeds_784_512_512_10_network():
    model = models.build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 512), (512, 10)]


def test_seed_cnn_ends_in_logits_not_softmax():
    model = models.build_model("cnn", num_classes=10, in_channels=1, image_size=(28, 28))
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())
    assert isinstance(list(model)[-1], nn.Linear)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3


def test_pretrained_weights_adapt_stem_to_grayscale_and_skip_head():
    source = models.build_model("resnet18", num_classes=1000, in_channels=3, image_size=(224, 224))
    target = models.build_model("resnet18", num_classes=10, in_channels=1, image_size=(28, 28))
    skipped = load_pretrained(target, source.state_dict())
    assert skipped == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    # 7x7 RGB stem -> 3x3 grayscale stem: the centre of the channel mean, rescaled by 3
    expected = source.conv1.weight.mean(dim=1, keepdim=True)[..., 2:5, 2:5] * 3
    torch.testing.assert_close(target.conv1.weight, expected)


def test_pretrained_weights_of_another_architecture_are_refused():
    mlp = models.build_model("mlp", num_classes=10, in_channels=1, image_size=(28, 28))
    target = models.build_model("mobilenet_v3_small", num_classes=10, in_channels=1, image_size=(28, 28))
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained(target, mlp.state_dict())


def test_wide_cnn_depth_sets_convolutions_per_stage():
    model = models.build_model("wide_cnn", num_classes=10, in_channels=1, image_size=(28, 28), depth=[1, 2, 2])
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [32, 64, 64, 128, 128]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
