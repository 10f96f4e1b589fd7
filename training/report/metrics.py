"""``report.json``: per-class metrics, confusion, calibration and mistakes of one test pass.

One accuracy figure hides a model that is good on average and bad on one class, confident and
wrong, or quietly predicting one class more often than before. The report keeps what shows
those, from the probabilities :func:`training.engine.collect_probabilities` returns, in plain
JSON types so the service can serve it and the retraining gate can compare two of them:

- ``classes``: precision, recall, F1 and support per class label, in index order; ``macro``
  their unweighted means over every class. A class never predicted has precision 0.0 (and one
  with no test samples recall 0.0), as scikit-learn's ``zero_division=0`` gives.
- ``confusion``: counts, rows the true class and columns the predicted one.
- ``calibration``: equal-width top-1 confidence bins, intervals ``(lower, upper]`` (the first
  includes 0), and the expected calibration error, ``sum(count / N * |accuracy - confidence|)``
  over the bins (Guo et al. 2017). An empty bin has ``null`` confidence and accuracy.
- ``mistakes``: the most confident wrong predictions, highest score first (ties by index), as
  indices into the evaluated split, so the pictures and people can look at the images.
- ``predicted_share``: the share of top-1 predictions per class, the reference the service's
  drift gauge compares live traffic with.
- ``sources`` (when per-sample source names are given): samples and accuracy per source, e.g.
  the shipped dataset against client feedback.

Floats are rounded to 6 digits: enough for any comparison, and a stable, readable file.
"""

import math
from typing import Any

import torch

_DIGITS = 6


def _round(value: float) -> float:
    return round(float(value), _DIGITS)


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` elementwise, 0.0 where the denominator is 0 (zero_division=0)."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.zeros_like(numerator))


def build_report(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    class_labels: list[str],
    *,
    sources: list[str] | None = None,
    mistakes: int = 16,
    bins: int = 15,
) -> dict[str, Any]:
    """The report of one evaluation: ``probabilities`` ``(N, K)`` (rows summing to 1) and true
    ``labels`` ``(N,)`` in the split's order, ``class_labels`` the K names in index order.

    ``sources`` names each sample's origin (``"fashion-mnist"``, ``"feedback"``) to report
    accuracy per source; ``mistakes`` caps the mistakes kept; ``bins`` is the number of
    calibration bins. Raises ``ValueError`` for inputs that do not fit together."""
    probabilities = probabilities.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64)
    count, classes = _check_inputs(probabilities, labels, class_labels, sources, mistakes, bins)
    confidence, predicted = probabilities.max(dim=1)  # (N,), (N,)
    correct = predicted == labels  # (N,)

    confusion = torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)
    true_positives = confusion.diagonal()
    support = confusion.sum(dim=1)  # true samples per class
    predicted_count = confusion.sum(dim=0)  # predictions per class
    precision = _safe_divide(true_positives, predicted_count)
    recall = _safe_divide(true_positives, support)
    # 2 TP / (2 TP + FP + FN): equals 2PR / (P + R) where both are defined, 0 where TP is 0
    f1 = _safe_divide(2 * true_positives, support + predicted_count)

    report: dict[str, Any] = {
        "samples": count,
        "accuracy": _round(correct.double().mean()),
        "classes": {
            label: {"precision": _round(precision[i]), "recall": _round(recall[i]), "f1": _round(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(class_labels)
        },
        "macro": {"precision": _round(precision.mean()), "recall": _round(recall.mean()),
                  "f1": _round(f1.mean())},
        "confusion": {"labels": list(class_labels), "matrix": confusion.tolist()},
        "calibration": _calibration(confidence, correct, bins),
        "mistakes": _mistakes(confidence, predicted, labels, class_labels, mistakes),
        "predicted_share": {label: _round(share) for label, share in
                            zip(class_labels, (predicted_count.double() / count).tolist(), strict=True)},
    }
    if sources is not None:
        report["sources"] = _per_source(sources, correct)
    return report


def _check_inputs(probabilities: torch.Tensor, labels: torch.Tensor, class_labels: list[str],
                  sources: list[str] | None, mistakes: int, bins: int) -> tuple[int, int]:
    if probabilities.dim() != 2 or labels.dim() != 1 or len(probabilities) != len(labels):
        raise ValueError(f"probabilities must be (N, K) and labels (N,), got {tuple(probabilities.shape)} "
                         f"and {tuple(labels.shape)}")
    count, classes = probabilities.shape
    if count == 0:
        raise ValueError("cannot report on an empty split: no samples")
    if classes != len(class_labels) or len(set(class_labels)) != len(class_labels):
        raise ValueError(f"{classes} probability columns need as many distinct class labels, "
                         f"got {len(class_labels)} ({len(set(class_labels))} distinct)")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    if sources is not None and len(sources) != count:
        raise ValueError(f"{len(sources)} sources for {count} samples")
    if mistakes < 0 or bins < 1:
        raise ValueError(f"mistakes must be >= 0 and bins >= 1, got {mistakes} and {bins}")
    return count, classes


def _calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int) -> dict[str, Any]:
    """Equal-width bins of top-1 confidence, ``(lower, upper]``, and their count-weighted ECE."""
    # ceil(c * bins) - 1 puts c in (i / bins, (i + 1) / bins]; c = 0 goes to the first bin
    index = (confidence * bins).ceil().long().sub(1).clamp(0, bins - 1)  # (N,)
    counts = torch.bincount(index, minlength=bins)
    confidence_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct.double())
    table, ece = [], 0.0
    for i in range(bins):
        n = int(counts[i])
        row = {"lower": _round(i / bins), "upper": _round((i + 1) / bins), "count": n,
               "confidence": None, "accuracy": None}
        if n:
            mean_confidence, accuracy = confidence_sum[i].item() / n, correct_sum[i].item() / n
            row.update(confidence=_round(mean_confidence), accuracy=_round(accuracy))
            ece += n * abs(accuracy - mean_confidence)
        table.append(row)
    return {"ece": _round(ece / len(confidence)), "bins": table}


def _mistakes(confidence: torch.Tensor, predicted: torch.Tensor, labels: torch.Tensor,
              class_labels: list[str], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` wrong predictions with the highest top-1 score, ties in index order."""
    wrong = (predicted != labels).nonzero().squeeze(1)  # (M,) ascending indices
    order = torch.sort(confidence[wrong], descending=True, stable=True).indices[:limit]
    return [{"index": int(i), "true": class_labels[int(labels[i])], "predicted": class_labels[int(predicted[i])],
             "score": _round(confidence[i])} for i in wrong[order].tolist()]


def _per_source(sources: list[str], correct: torch.Tensor) -> dict[str, dict[str, Any]]:
    """Samples and accuracy per source name, names sorted."""
    names = sorted(set(sources))
    position = {name: i for i, name in enumerate(names)}
    index = torch.tensor([position[s] for s in sources], dtype=torch.int64)
    counts = torch.bincount(index, minlength=len(names))
    hits = torch.zeros(len(names), dtype=torch.float64).index_add_(0, index, correct.double())
    return {name: {"samples": int(counts[i]), "accuracy": _round(hits[i] / counts[i])}
            for i, name in enumerate(names)}


def class_recalls(report: dict[str, Any]) -> dict[str, float]:
    """Recall per class label: what the retraining gate compares between a candidate and
    production scored on the same split."""
    return {label: float(row["recall"]) for label, row in report["classes"].items()}


def format_class_table(report: dict[str, Any]) -> str:
    """The per-class table people read in a terminal (``python -m training report``): one row
    per class, then accuracy, the macro averages, the calibration error and, when the report
    has them, the accuracy per data source."""
    rows = report["classes"]
    width = max([len("accuracy"), len("macro avg"), *(len(label) for label in rows)])
    samples = report["samples"]

    def line(name: str, *cells: str) -> str:
        return f"{name:<{width}}  " + "  ".join(f"{cell:>9}" for cell in cells)

    def number(value: float | None) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    lines = [line("class", "precision", "recall", "F1", "support")]
    for label, row in rows.items():
        lines.append(line(label, number(row["precision"]), number(row["recall"]), number(row["f1"]),
                          str(row["support"])))
    lines.append("")
    lines.append(line("accuracy", "", "", number(report["accuracy"]), str(samples)))
    macro = report["macro"]
    lines.append(line("macro avg", number(macro["precision"]), number(macro["recall"]), number(macro["f1"]),
                      str(samples)))
    calibration = report.get("calibration")
    if calibration is not None:
        lines.append(f"{'ECE':<{width}}  {number(calibration['ece']):>9}  ({len(calibration['bins'])} "
                     "confidence bins)")
    for source, row in (report.get("sources") or {}).items():
        lines.append(f"source {source}: accuracy {number(row['accuracy'])} on {row['samples']} samples")
    return "\n".join(line_.rstrip() for line_ in lines)
