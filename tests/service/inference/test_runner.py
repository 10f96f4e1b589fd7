"""The inference thread's batch work (``service.inference.runner``): several requests decoded
and run as one forward, each failing or succeeding alone, and metrics of what the model saw."""

import numpy as np
import pytest
import torch
from support.images import band_images, encode
from support.service import MODEL, reference_probabilities

from service.inference.imaging import RawImage
from service.inference.loading import LoadedModel, load_model
from service.inference.runner import BatchRunner, Job
from service.settings import Settings
from service.workers.core_share import CoreShare


@pytest.fixture(scope="module")
def loaded(trained_registry) -> LoadedModel:
    return load_model(trained_registry, MODEL, None, device=torch.device("cpu"), warmup_batch=4)


def _runner(registry) -> BatchRunner:
    """The inference thread's batch runner with the default settings, on this thread."""
    settings = Settings(model_registry=registry, model_name=MODEL)
    return BatchRunner(settings, CoreShare(None, None, shared_threads=1, alone_threads=1))



def test_a_bad_image_fails_its_own_job_only_when_decoded_with_the_batch(trained_registry, loaded):
    """Small requests are decoded on the inference thread, several in one batch: one request's
    bad file must not fail the others, and its error names the file and its index."""
    from service.errors import InvalidImageError

    arrays, _ = band_images(3, seed=4)
    good = [RawImage(f"{i}.png", encode(array)) for i, array in enumerate(arrays)]
    bad = RawImage("broken.png", encode(arrays[0])[:40])
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



def test_only_images_that_went_through_the_forward_count_as_classified(trained_registry, loaded):
    """A job refused for a bad image, or left undecoded for the pool, classifies nothing: the
    forward-pass metrics count the images the model saw, and a batch with none has no forward."""
    from prometheus_client import REGISTRY

    from service.inference.runner import Undecoded

    def counted(metric: str) -> float:
        return REGISTRY.get_sample_value(metric, {"model": MODEL}) or 0.0

    arrays, _ = band_images(2, seed=5)
    good = RawImage("good.png", encode(arrays[0]))
    bad = RawImage("broken.png", encode(arrays[1])[:40])
    big = RawImage("big.png", encode(np.zeros((600, 600), dtype=np.uint8)))
    runner = _runner(trained_registry)
    before = {m: counted(m) for m in ("imgclf_images_total", "imgclf_inference_seconds_count")}
    results = runner(loaded, [Job(1, files=[good]), Job(1, files=[bad]), Job(1, files=[big])])
    assert isinstance(results[2], Undecoded) and results[2].opened.pixels == 600 * 600
    assert counted("imgclf_images_total") - before["imgclf_images_total"] == 1
    assert counted("imgclf_inference_seconds_count") - before["imgclf_inference_seconds_count"] == 1
    runner(loaded, [Job(1, files=[bad])])
    assert counted("imgclf_inference_seconds_count") - before["imgclf_inference_seconds_count"] == 1

