"""Candidate versus production, on the same held-out test split, and the promotion rule.

Why production is re-evaluated instead of trusting the ``test_accuracy`` in its metadata: the
recorded number is only comparable when the test split is byte-for-byte the one the candidate
was tested on. Retraining exists because data changes (a user's ImageFolder grows, a
``test/`` folder is added, ``TRAIN_SEED`` or ``TRAIN_TEST_FRACTION`` moves the held-out share),
and any of those silently changes the split. Scoring the production artifact, through the
same registry loader the service uses, on the very tensors the candidate was tested on costs
one more pass over the test split (the same work as the candidate's own test; about 12% of a
1-epoch Fashion-MNIST run on a 2-core CPU) and makes the comparison exact. The recorded
metric is still reported, and used only when the production model cannot read the candidate's
inputs (another image size or channel count), in which case the report says so.
"""

import logging
from dataclasses import dataclass

import torch

from artifacts.devices import is_conv_net
from artifacts.preprocess import EvalTransform
from artifacts.registry import Artifact
from training.config import TrainConfig
from training.data.batches import BatchLoader
from training.data.splits import DataSplits
from training.engine import collect_probabilities, resolve_runtime, stats_from_probabilities
from training.report.metrics import build_report, class_recalls

log = logging.getLogger(__name__)

METRIC = "test_accuracy"
# Both accuracies are exact fractions of the same sample count; this only absorbs the
# rounding of ``production + margin``.
EPSILON = 1e-9


@dataclass
class ProductionScore:
    """Production's score on the candidate's test split, and where the number comes from."""

    test_accuracy: float | None
    test_loss: float | None
    source: str  # "re-evaluated" | "recorded" | "unavailable"
    note: str = ""
    test_samples: int | None = None  # the size of the split it was scored on
    # Recall per class label on that split; None when not re-evaluated with the same labels.
    class_recalls: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return {"test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
                "test_samples": self.test_samples, "source": self.source, "note": self.note,
                "class_recalls": self.class_recalls}


def score_production(artifact: Artifact, cfg: TrainConfig, data: DataSplits) -> ProductionScore:
    """Score ``artifact`` on ``data.test`` (the candidate's split) with the training code."""
    recorded = artifact.metadata.get("metrics", {})
    spec = artifact.input_spec
    test_shape = tuple(data.test.images.shape[1:])  # (C, H, W)
    if (spec.channels, spec.height, spec.width) != test_shape:
        note = (f"production expects {spec.channels}x{spec.height}x{spec.width} inputs, the "
                f"candidate's test split is {'x'.join(map(str, test_shape))}: "
                "using its recorded metric")
        log.warning("%s", note)
        return _recorded(recorded, note)
    # The same device, precision and memory format as the candidate's own test, like for like.
    model = artifact.model
    runtime = resolve_runtime(device=cfg.device, precision=cfg.precision, channels_last=is_conv_net(model))
    model = runtime.place(model)
    loader = BatchLoader(data.test, batch_size=512, shuffle=False)
    transform = EvalTransform(spec=spec)
    if list(artifact.class_labels) == list(data.classes):
        probabilities, labels = collect_probabilities(model, loader, transform=transform, runtime=runtime)
        stats = stats_from_probabilities(probabilities, labels)
        recalls = class_recalls(build_report(probabilities, labels, data.classes, mistakes=0))
        return ProductionScore(stats["accuracy"], stats["loss"], "re-evaluated",
                               test_samples=len(data.test), class_recalls=recalls)
    # The label set changed (a class added or renamed): score by label name. A class that
    # production does not know counts as wrong, which is exactly what serving it would do.
    accuracy = _accuracy_by_label(model, loader, transform, runtime,
                                  artifact.class_labels, data.classes)
    note = "class labels differ from the candidate's; accuracy compared by label name, no loss"
    return ProductionScore(accuracy, None, "re-evaluated", note, test_samples=len(data.test))


def _recorded(recorded: dict, note: str) -> ProductionScore:
    accuracy = recorded.get(METRIC)
    if accuracy is None:
        return ProductionScore(None, None, "unavailable", note + " (none recorded)")
    return ProductionScore(float(accuracy), recorded.get("test_loss"), "recorded", note,
                           test_samples=recorded.get("test_samples"))


@torch.inference_mode()
def _accuracy_by_label(model, loader, transform, runtime, model_labels, data_labels) -> float:
    index = {label: i for i, label in enumerate(data_labels)}
    # production class index -> candidate class index (-1: never right)
    mapping = torch.tensor([index.get(label, -1) for label in model_labels], device=runtime.device)
    model.eval()
    correct = count = 0
    for images, labels in loader:
        with runtime.autocast():
            logits = model(runtime.prepare(images, transform))  # (N, production classes)
        predicted = mapping[logits.argmax(dim=1)]
        correct += (predicted == labels.to(runtime.device)).sum().item()
        count += len(labels)
    return correct / max(count, 1)


def decide(candidate: float, production: float | None, *, margin: float,
           floor: float) -> tuple[bool, str]:
    """The promotion rule: (promote?, a reason a person can read in the report and the log).

    A candidate must reach ``floor``; with a production model it must also reach production's
    score plus ``margin`` on the same split ("at least as good" when the margin is 0).
    """
    if candidate + EPSILON < floor:
        return False, f"candidate {METRIC} {candidate:.4f} is below the floor {floor:.4f}"
    if production is None:
        return True, (f"no comparable production model; candidate {METRIC} {candidate:.4f} "
                      f"meets the floor {floor:.4f}")
    bar = production + margin
    if candidate + EPSILON >= bar:
        return True, (f"candidate {METRIC} {candidate:.4f} >= production {production:.4f} "
                      f"{margin:+.4f} margin")
    return False, (f"candidate {METRIC} {candidate:.4f} < production {production:.4f} "
                   f"{margin:+.4f} margin")


def class_gate(candidate: dict[str, float], production: dict[str, float], *,
               max_drop: float) -> tuple[dict | None, dict[str, dict[str, float]]]:
    """The class whose recall fell most beyond ``max_drop`` below production's on the same
    split (``{"label", "candidate", "production", "drop"}``, or None: no class blocks), and
    both recalls of every class for the report.

    Why per class: overall accuracy can rise while one class collapses (feedback that floods
    one label, a class whose new images are mislabelled), and the users of that class would
    see a worse model after a "better" one was promoted."""
    table = {label: {"candidate": candidate[label], "production": production[label],
                     "change": round(candidate[label] - production[label], 6)}
             for label in candidate if label in production}
    worst = min(table.items(), key=lambda item: item[1]["change"], default=None)
    if worst is None or -worst[1]["change"] <= max_drop + EPSILON:
        return None, table
    label, row = worst
    return {"label": label, "candidate": row["candidate"], "production": row["production"],
            "drop": -row["change"]}, table


def decide_classes(candidate: dict[str, float], production: dict[str, float], *,
                   max_drop: float) -> tuple[bool, str, dict]:
    """The per-class half of the promotion rule (``SCHEDULE_MAX_CLASS_DROP``): (passes?, a
    reason a person can read, the report's ``gate`` section)."""
    blocking, table = class_gate(candidate, production, max_drop=max_drop)
    gate = {"max_class_drop": max_drop, "classes": table, "blocking_class": blocking}
    if blocking is None:
        return True, f"no class recall fell by more than {max_drop:.3f}", gate
    return False, (f"class {blocking['label']!r} recall fell from {blocking['production']:.4f} "
                   f"(production) to {blocking['candidate']:.4f} (candidate), more than "
                   f"SCHEDULE_MAX_CLASS_DROP={max_drop:.3f}; kept"), gate
