"""The evaluation preprocessing both sides share (``artifacts.preprocess``): any image becomes the
model's uint8 layout, then the normalisation training used. The service's decoder is checked
against it in tests/service/inference/test_imaging.py."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from support.images import encode

from artifacts.preprocess import EvalTransform, InputSpec, image_to_uint8

GRAY = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.25,))
RGB = InputSpec(channels=3, height=8, width=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))


def test_eval_transform_matches_torchvision_normalize():
    from torchvision.transforms import v2

    batch = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    reference = v2.Normalize(RGB.mean, RGB.std)(batch.float() / 255)
    torch.testing.assert_close(EvalTransform(spec=RGB)(batch), reference)


def test_eval_transform_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        EvalTransform(spec=GRAY)(torch.zeros(1, 1, 28, 28))


def test_png_file_of_training_pixels_gives_back_the_same_pixels():
    """A 28x28 grayscale PNG file made from a training image (idx data) decodes to the very
    same uint8 tensor the model was trained on."""
    for seed in range(4):
        pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
        with Image.open(io.BytesIO(encode(pixels))) as image:
            decoded = image_to_uint8(image, spec=GRAY)
        assert decoded.shape == (1, 28, 28) and decoded.dtype == torch.uint8
        assert torch.equal(decoded[0], torch.from_numpy(pixels))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK", "I;16", "1", "F"])
def test_any_pil_mode_becomes_the_model_layout(mode):
    image = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    for spec in (GRAY, RGB):
        out = image_to_uint8(image, spec=spec)
        assert out.shape == (spec.channels, spec.height, spec.width)
        assert out.dtype == torch.uint8


def test_transparent_pixels_become_black_background():
    image = Image.new("RGBA", (28, 28), (255, 255, 255, 0))
    assert image_to_uint8(image, spec=GRAY).max() == 0


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    image = Image.fromarray(np.full((28, 28), 65535, dtype=np.uint16))
    assert image_to_uint8(image, spec=GRAY).min() == 255


def test_input_spec_roundtrips_through_metadata_dict():
    assert InputSpec.from_dict(RGB.to_dict()) == RGB
