"""The predictor (``service.inference.predictor``) run as the route runs it: a parsed request
in, the JSON answer out, with the decode pool, the batcher and the inference thread between."""

import asyncio
import json
import time

import pytest
import torch
from PIL import Image
from support.images import band_images, encode
from support.service import MODEL, inprocess_settings, json_predict_request

from artifacts import registry
from artifacts.preprocess import EvalTransform
from service.inference.loading import load_model
from service.inference.predictor import Predictor
from training.data.sources import load_imagefolder
from training.local_predict import predict_files

PNG = encode(band_images(1, seed=2)[0][0])


async def _serve(settings, *requests) -> list[dict]:
    """The JSON answers of a started predictor serving the production model to ``requests``,
    one after the other."""
    predictor = Predictor(settings)
    await predictor.start()
    try:
        loaded = load_model(settings.model_registry, MODEL, None, device=torch.device("cpu"),
                            warmup_batch=4)
        predictor.install(predictor.slot(None), loaded)
        return [json.loads(await predictor.predict(request)) for request in requests]
    finally:
        await predictor.stop()


@pytest.mark.parametrize("max_batch_size", [8, 4], ids=["one-batch", "decoded-in-the-pool"])
def test_predictor_answers_what_training_evaluation_and_local_predict_compute(
        trained_registry, tmp_path, max_batch_size):
    """The same image files, resized on load (56x56 for a 28x28 model): the predictor's classes
    and scores equal those of training's evaluation (its ImageFolder loader and the artifact's
    transform) and of ``python -m training predict``. Six images in batches of 4 take the
    other path: decoded in the pool, queued again as pixels in two jobs."""
    arrays, _ = band_images(6, seed=9)
    folder = tmp_path / "folder" / "train" / "only"
    folder.mkdir(parents=True)
    paths = []
    for i, array in enumerate(arrays):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(encode(Image.fromarray(array).resize((56, 56))))

    settings = inprocess_settings(trained_registry, max_batch_size=max_batch_size)
    [answer] = asyncio.run(_serve(settings, json_predict_request(
        *(path.read_bytes() for path in paths), top_k=3)))

    artifact = registry.load_artifact(trained_registry, MODEL)
    pixels = load_imagefolder(tmp_path / "folder", channels=1, image_size=28).train.images
    with torch.inference_mode():
        scores = artifact.model(EvalTransform(spec=artifact.input_spec)(pixels)).softmax(1)
    top_scores, top_indices = scores.topk(3)
    assert (answer["model"], answer["version"]) == (MODEL, "1")
    predictions = answer["predictions"]
    assert [[c["index"] for c in p["top_k"]] for p in predictions] == top_indices.tolist()
    assert [c["score"] for p in predictions for c in p["top_k"]] == pytest.approx(
        top_scores.flatten().tolist(), abs=1e-6)
    assert len({p["index"] for p in predictions}) > 1  # the images are told apart

    local = list(predict_files(trained_registry, MODEL, None, paths))
    assert [p["label"] for p in predictions] == [label for _, label, _ in local]
    assert [p["score"] for p in predictions] == pytest.approx([s for *_, s in local], abs=1e-6)


def test_a_request_handed_back_to_the_decode_pool_is_not_refused_when_it_queues_again(
        registry_copy):
    big = encode(Image.new("L", (4000, 4000)))  # 16 Mpx, ~60 ms to decode in the pool
    settings = inprocess_settings(registry_copy, max_queue=4, max_batch_size=4,
                                  max_batch_wait_ms=0)

    async def main():
        predictor = Predictor(settings)
        await predictor.start()
        loaded = load_model(registry_copy, MODEL, None, device=torch.device("cpu"),
                            warmup_batch=4)
        forward = loaded.model.forward
        loaded.model.forward = lambda x: (time.sleep(0.3), forward(x))[1]  # a busy worker
        predictor.install(predictor.slot(None), loaded)

        async def request(*data):
            await predictor.predict(json_predict_request(*data))
            return 200

        try:
            first = asyncio.create_task(request(big))  # admitted to an empty queue
            others = []
            for _ in range(2):  # while it is decoded in the pool: one batch runs, one queues
                await asyncio.sleep(0.015)
                others.append(asyncio.create_task(request(PNG, PNG, PNG, PNG)))
            return await first, await asyncio.gather(*others, return_exceptions=True)
        finally:
            await predictor.stop()

    status, _ = asyncio.run(main())
    assert status == 200  # not a 503 after its decode was done: it was admitted once

