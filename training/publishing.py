"""Publish a trained model with everything that travels with it.

Beside ``weights.pt`` and ``metadata.json`` (:func:`artifacts.registry.publish`):

- ``report.json`` and its pictures: the test split's evaluation per class (``training.report``);
- ``golden.pt``: a few test images with the probabilities these weights give them in fp32 on
  the CPU, which every load must reproduce (:mod:`artifacts.golden`);
- ``dataset.json``: the manifest of the growing sources it was trained on, so that the next run
  can say which samples are new (:mod:`training.data.fingerprint`).

``metadata.json`` gains ``data`` (the fingerprint and the counts per source, split and class)
``prediction_reference`` (the share of each predicted class on the test split: the
distribution the service's drift gauge compares live traffic with) and ``history`` (the
per-epoch training curves).
"""

import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn

from artifacts import production, registry
from artifacts.golden import GOLDEN_FILE, GOLDEN_SIZE, MIN_MARGIN, GoldenSet, golden_probabilities
from artifacts.metadata import build_metadata
from artifacts.preprocess import InputSpec
from artifacts.registry import REPORT_FILE
from models import with_test_time_augmentation
from training.config import TrainConfig
from training.data.fingerprint import MANIFEST_FILE
from training.data.sources import ImageTensors
from training.data.splits import DataSplits

log = logging.getLogger(__name__)

def publish_model(cfg: TrainConfig, data: DataSplits, model: nn.Module, metrics: dict,
                  report: dict, history: list[dict] | None = None) -> str:
    """Publish the (best) model's CPU state_dict, its report, golden set and data manifest;
    promote it when ``cfg.promote``. Returns the version. ``model`` is the bare network (its
    weight average under ``--ema``); ``--tta`` is recorded, and the golden set made, with it."""
    from training.report.pictures import render_pictures  # matplotlib: only when publishing

    cpu_model = copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()
    state_dict = {k: v.detach().contiguous() for k, v in cpu_model.state_dict().items()}
    metadata = build_metadata(
        name=cfg.model_name, architecture=cfg.model, architecture_kwargs=cfg.model_kwargs,
        class_labels=data.classes, input_spec=data.input_spec, metrics=metrics,
        dataset=cfg.dataset, config=cfg.to_dict(), test_time_augmentation=cfg.tta,
    )
    metadata["data"] = {"fingerprint": data.fingerprint.to_metadata() if data.fingerprint else None,
                        "counts": data.counts}
    metadata["prediction_reference"] = {"class_share": report["predicted_share"],
                                        "samples": report["samples"], "split": "test"}
    # The training curves, per epoch (loss, accuracy, learning rate, seconds): people judge a
    # model by them too (the web page draws them), and the checkpoint that holds them stays
    # with the run, not with the version.
    metadata["history"] = [{k: v for k, v in record.items() if isinstance(v, (int, float))}
                           for record in history or []]
    golden = choose_golden(with_test_time_augmentation(cpu_model, cfg.tta), data.input_spec, data.test,
                           seed=cfg.seed)
    files = {REPORT_FILE: json.dumps(report, indent=1).encode(), GOLDEN_FILE: golden.to_bytes(),
             **render_pictures(report, data.test.images)}
    if data.fingerprint is not None:
        files[MANIFEST_FILE] = data.fingerprint.manifest_bytes()
    version = registry.publish(Path(cfg.registry), metadata, state_dict, files=files)
    if cfg.promote:
        production.switch_production(Path(cfg.registry), cfg.model_name, version)  # locked
    return version


def choose_golden(model: nn.Module, spec: InputSpec, test: ImageTensors, *, seed: int,
                  size: int = GOLDEN_SIZE) -> GoldenSet:
    """``size`` test images spread over the predicted classes, each predicted with a lead of at
    least :data:`~artifacts.golden.MIN_MARGIN` over its runner-up, so that no precision the
    service may run in can flip its top-1 by rounding; fewer, with a warning, when the model is
    rarely that sure."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randperm(len(test), generator=generator)[: max(16 * size, 512)]
    images = test.images[pool]
    probabilities = golden_probabilities(model, spec, images)  # (P, K) float32
    top = probabilities.topk(min(2, probabilities.shape[1]), dim=1).values
    margin = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
    eligible = (margin >= MIN_MARGIN).nonzero().flatten().tolist()
    if len(eligible) < size:
        # A barely trained model: the most decided images that still lead by a quarter of the
        # margin (bf16 moves a probability by about 1e-2), else the single most decided one.
        ranked = [i for i in margin.argsort(descending=True)[:size].tolist() if margin[i] >= MIN_MARGIN / 4]
        eligible = ranked or [int(margin.argmax())]
        log.warning("golden set: only %d of %d test images are predicted with a lead of %.2f; "
                    "keeping %d", int((margin >= MIN_MARGIN).sum()), len(pool), MIN_MARGIN, len(eligible))
    predicted = probabilities.argmax(dim=1).tolist()
    by_class: dict[int, list[int]] = {}
    for i in eligible:
        by_class.setdefault(predicted[i], []).append(i)
    chosen: list[int] = []
    while len(chosen) < size and any(by_class.values()):  # round robin over the classes
        for queue in by_class.values():
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    index = torch.tensor(sorted(chosen))
    return GoldenSet(images[index].contiguous(), probabilities[index].contiguous(),
                     test.labels[pool][index].contiguous())
