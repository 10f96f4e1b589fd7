"""The service decodes and preprocesses exactly as training does (unit tests, no server)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from service_support import MODEL, band_images, encode, reference_probabilities

from artifacts import registry
from artifacts.preprocess import EvalTransform, InputSpec, image_to_uint8, pixels_to_uint8
from service.api.parsing import RawImage
from service.inference.imaging import ImageDecodeError, decode_image, decode_opened, open_images
from service.inference.runner import BatchRunner, Job
from service.settings import Settings
from service.workers.core_share import CoreShare
from training.data.sources import load_imagefolder
from training.local_predict import predict_files

GREY = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.25,))
RGB = InputSpec(channels=3, height=32, width=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def _training_path(data: bytes, spec: InputSpec) -> torch.Tensor:
    """What the training ImageFolder loader and `python -m training predict` do with a file."""
    with Image.open(io.BytesIO(data)) as image:
        return image_to_uint8(ImageOps.exif_transpose(image), spec=spec)


def _variants() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: must be turned upright like in training
    sixteen = Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16))
    return {
        "grey-png": encode(band_images(1, seed=1)[0][0]),
        "rgb-jpeg": encode(rgb, "JPEG", quality=90),
        "rgba-png": encode(rgba),
        "palette-gif": encode(rgb.convert("P")),
        "exif-jpeg": encode(rgb, "JPEG", exif=exif),
        "16bit-png": encode(sixteen),
        "bmp": encode(rgb, "BMP"),
        "webp": encode(rgb, "WEBP"),
    }


@pytest.mark.parametrize("spec", [GREY, RGB], ids=["grey", "rgb"])
@pytest.mark.parametrize("kind", list(_variants()))
def test_decode_matches_the_training_loader_for_every_mode(kind, spec):
    data = _variants()[kind]
    decoded = decode_image(data, spec=spec, max_pixels=10_000)
    assert decoded.dtype == torch.uint8 and decoded.shape == (spec.channels, 28 if spec is GREY
                                                              else 32, 28 if spec is GREY else 32)
    assert torch.equal(decoded, _training_path(data, spec))


def test_lossless_png_reproduces_the_training_tensor_exactly():
    arrays, _ = band_images(4, seed=5)
    for array in arrays:
        decoded = decode_image(encode(array), spec=GREY, max_pixels=784)
        assert torch.equal(decoded[0], torch.from_numpy(array))  # idx data == decoded PNG


def test_decode_refuses_bad_input_with_the_right_status():
    spec, limit = GREY, 100
    assert _status(b"", spec, limit) == 422
    assert _status(b"GIF89a-garbage", spec, limit) == 422
    assert _status(encode(Image.new("L", (11, 10))), spec, limit) == 413
    pdf_like = b"%PDF-1.4\n" + b"0" * 100
    assert _status(pdf_like, spec, limit) == 422
    ico = io.BytesIO()
    Image.new("RGB", (8, 8)).save(ico, "ICO")  # a real image, but not an allowed format
    assert _status(ico.getvalue(), spec, limit) == 422


def _status(data: bytes, spec: InputSpec, limit: int) -> int:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, spec=spec, max_pixels=limit)
    return info.value.status


def test_predictor_matches_training_evaluation_and_local_predict(trained_registry, tmp_path):
    """End to end in process: the service's numbers equal training's for the same files."""
    arrays, _ = band_images(6, seed=9)
    paths = []
    for i, array in enumerate(arrays):
        path = tmp_path / f"{i}.png"
        path.write_bytes(encode(Image.fromarray(array).resize((56, 56))))  # resized on load
        paths.append(path)
    from service.inference.loading import load_model

    loaded = load_model(trained_registry, MODEL, None, device=torch.device("cpu"), warmup_batch=4)
    files = [RawImage(p.name, p.read_bytes()) for p in paths]
    pixels = decode_opened(open_images(files, max_pixels=1 << 24), spec=loaded.spec)
    [(scores, indices)] = _runner(trained_registry)(loaded, [Job(1, pixels=pixels)])
    local = list(predict_files(trained_registry, MODEL, None, paths))
    assert [row[0] for row in indices] == [loaded.labels.index(label) for _, label, _ in local]
    assert [row[0] for row in scores] == pytest.approx([score for *_, score in local], abs=1e-6)

    # The training ImageFolder loader produces the very same uint8 tensors.
    folder = tmp_path / "folder" / "train" / "only"
    folder.mkdir(parents=True)
    for path in paths:
        (folder / path.name).write_bytes(path.read_bytes())
    data = load_imagefolder(tmp_path / "folder", channels=1, image_size=28)
    batch = pixels_to_uint8(pixels, spec=loaded.spec)
    assert torch.equal(data.train.images, batch)

    artifact = registry.load_artifact(trained_registry, MODEL)
    with torch.inference_mode():
        expected = artifact.model(EvalTransform(spec=artifact.input_spec)(batch)).softmax(1)
    assert [row[0] for row in scores] == pytest.approx(expected.max(1).values.tolist(), abs=1e-6)
    small = reference_probabilities(trained_registry, MODEL, arrays)
    assert small.shape == (6, 10)


def test_a_bad_image_fails_its_own_job_only_when_decoded_with_the_batch(trained_registry):
    """Small requests are decoded on the inference thread, several in one batch: one request's
    bad file must not fail the others, and its error names the file and its index."""
    from service.errors import InvalidImageError
    from service.inference.loading import load_model

    arrays, _ = band_images(3, seed=4)
    good = [RawImage(f"{i}.png", encode(array)) for i, array in enumerate(arrays)]
    bad = RawImage("broken.png", encode(arrays[0])[:40])
    loaded = load_model(trained_registry, MODEL, None, device=torch.device("cpu"), warmup_batch=4)
    jobs = [Job(1, files=good[:1]), Job(1, files=[good[1], bad]), Job(2, files=good)]
    first, failed, last = _runner(trained_registry)(loaded, jobs)
    assert isinstance(failed, InvalidImageError)
    [problem] = failed.extra["problems"]
    assert (problem["index"], problem["filename"], problem["status"]) == (1, "broken.png", 422)
    expected = reference_probabilities(trained_registry, MODEL, arrays)
    # Rows hold the batch's largest top_k; encode() trims each request to its own.
    assert [row[0] for row in first[1]] == [int(expected[0].argmax())]
    assert [row[0] for row in last[1]] == expected.argmax(1).tolist()
    assert [len(row) for row in last[0]] == [2, 2, 2]


def test_only_images_that_went_through_the_forward_count_as_classified(trained_registry):
    """A job refused for a bad image, or left undecoded for the pool, classifies nothing: the
    forward-pass metrics count the images the model saw, and a batch with none has no forward."""
    from prometheus_client import REGISTRY

    from service.inference.loading import load_model
    from service.inference.runner import Undecoded

    def counted(metric: str) -> float:
        return REGISTRY.get_sample_value(metric, {"model": MODEL}) or 0.0

    arrays, _ = band_images(2, seed=5)
    good = RawImage("good.png", encode(arrays[0]))
    bad = RawImage("broken.png", encode(arrays[1])[:40])
    big = RawImage("big.png", encode(np.zeros((600, 600), dtype=np.uint8)))
    loaded = load_model(trained_registry, MODEL, None, device=torch.device("cpu"), warmup_batch=4)
    runner = _runner(trained_registry)
    before = {m: counted(m) for m in ("imgclf_images_total", "imgclf_inference_seconds_count")}
    results = runner(loaded, [Job(1, files=[good]), Job(1, files=[bad]), Job(1, files=[big])])
    assert isinstance(results[2], Undecoded) and results[2].opened.pixels == 600 * 600
    assert counted("imgclf_images_total") - before["imgclf_images_total"] == 1
    assert counted("imgclf_inference_seconds_count") - before["imgclf_inference_seconds_count"] == 1
    runner(loaded, [Job(1, files=[bad])])
    assert counted("imgclf_inference_seconds_count") - before["imgclf_inference_seconds_count"] == 1


def _runner(registry) -> BatchRunner:
    """The inference thread's batch runner with the default settings, on this thread."""
    settings = Settings(model_registry=registry, model_name=MODEL)
    return BatchRunner(settings, CoreShare(None, None, shared_threads=1, alone_threads=1))
