"""The report's pictures: ``confusion.png``, ``reliability.png`` and ``mistakes.png``.

People would rather look at a heatmap than read a 10 x 10 matrix of counts. Drawn with
matplotlib's object API onto Agg canvases (no pyplot, so no global figure registry or backend
choice leaks into the process), at a fixed DPI and a figure size that depends only on the
number of classes or mistakes, so the same report always gives pictures of the same size.
matplotlib is the training side's plotting dependency (the ``training`` extra): this module
is imported only to draw, so :mod:`training.report.metrics` works without it.
"""

import io
import math
from typing import Any

import torch

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError("the report pictures need matplotlib: pip install -e '.[training]'",
                              name=exc.name) from exc

DPI = 100
_MISTAKE_COLUMNS = 8  # at most this many images per row of the mistakes grid


def render_pictures(report: dict[str, Any], images: torch.Tensor) -> dict[str, bytes]:
    """PNG bytes of the three pictures of ``report`` (:func:`training.report.metrics.build_report`),
    keyed by file name. ``images`` is the evaluated split as uint8 ``(N, C, H, W)`` with 1 or 3
    channels, the images ``report["mistakes"]`` index into."""
    return {
        "confusion.png": _png(_confusion_figure(report)),
        "reliability.png": _png(_reliability_figure(report)),
        "mistakes.png": _png(_mistakes_figure(report, images)),
    }


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)  # attaches itself to the figure
    # no bbox_inches="tight": the size stays what the figure says, whatever the label lengths
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _confusion_figure(report: dict[str, Any]) -> Figure:
    """Counts annotated on cells coloured by the share of their row (the true class), so a
    small class's confusions stand out as much as a large one's."""
    labels = report["confusion"]["labels"]
    matrix = torch.tensor(report["confusion"]["matrix"], dtype=torch.float64)  # (K, K) true x predicted
    classes = len(labels)
    side = min(max(4.0 + 0.45 * classes, 6.0), 20.0)  # inches: cells shrink as classes grow
    figure = Figure(figsize=(side, side), layout="constrained")
    ax = figure.add_subplot()
    shares = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    tick_size = max(3.0, min(9.0, 300.0 / classes))
    ax.set_xticks(range(classes), labels, rotation=45 if classes <= 30 else 90, ha="right",
                  rotation_mode="anchor", fontsize=tick_size)
    ax.set_yticks(range(classes), labels, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {report['samples']} test samples, accuracy {report['accuracy']:.2%}")
    # Annotations shrink with the cells; zeros are left blank so the off-diagonal errors show.
    cell_points = side * 72 * 0.75 / classes
    digits = len(str(int(matrix.max()))) if classes else 1
    text_size = min(9.0, cell_points / (0.65 * max(digits, 2)))
    if text_size >= 2.0:
        for (row, column), count in zip(torch.cartesian_prod(torch.arange(classes), torch.arange(classes)).tolist(),
                                        matrix.flatten().tolist()):
            if count:
                dark = shares[row, column] > 0.5
                ax.text(column, row, str(int(count)), ha="center", va="center", fontsize=text_size,
                        color="white" if dark else "black")
    return figure


def _reliability_figure(report: dict[str, Any]) -> Figure:
    """Accuracy against mean confidence per bin above the diagonal of perfect calibration,
    and below it how many predictions fall in each bin."""
    calibration = report["calibration"]
    bins = calibration["bins"]
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    filled = [b for b in bins if b["count"]]
    figure = Figure(figsize=(6.0, 7.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar([(b["lower"] + b["upper"]) / 2 for b in filled], [b["accuracy"] for b in filled], width=width,
            edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    top.scatter([b["confidence"] for b in filled], [b["accuracy"] for b in filled], color="tab:red", zorder=3,
                s=14, label="mean confidence")
    top.set(xlim=(0, 1), ylim=(0, 1.05), ylabel="accuracy")
    top.set_title(f"Reliability: ECE {calibration['ece']:.4f} ({report['samples']} samples)")
    top.legend(loc="upper left", fontsize=8)
    counts = [b["count"] for b in bins]
    bottom.bar(centers, counts, width=width, edgecolor="black", color="tab:grey")
    for center, count in zip(centers, counts):
        if count:
            bottom.annotate(str(count), (center, count), ha="center", va="bottom", fontsize=6,
                            xytext=(0, 1), textcoords="offset points")
    bottom.set(xlabel="top-1 confidence", ylabel="predictions", ylim=(0, max(counts) * 1.25 or 1))
    return figure


def _mistakes_figure(report: dict[str, Any], images: torch.Tensor) -> Figure:
    """A grid of the most confident mistakes, each titled "true / predicted (score)"."""
    mistakes = report["mistakes"]
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    beyond = [m["index"] for m in mistakes if not 0 <= m["index"] < len(images)]
    if beyond:
        raise ValueError(f"mistake indices {beyond[:5]} lie outside the {len(images)} images given")
    if not mistakes:
        figure = Figure(figsize=(4.0, 1.5))
        figure.text(0.5, 0.5, "no mistakes on the test split", ha="center", va="center")
        return figure
    columns = min(len(mistakes), _MISTAKE_COLUMNS)
    rows = math.ceil(len(mistakes) / columns)
    figure = Figure(figsize=(1.9 * columns, 2.1 * rows + 0.4), layout="constrained")
    figure.suptitle("Most confident mistakes: true / predicted (score)", fontsize=10)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, mistake in zip(axes.flat, mistakes):
        pixels = images[mistake["index"]]  # (C, H, W) uint8
        if pixels.shape[0] == 1:
            ax.imshow(pixels[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(pixels.permute(1, 2, 0).numpy(), interpolation="nearest")
        title = f"{mistake['true']} / {mistake['predicted']} ({mistake['score']:.2f})"
        if len(title) > 24:  # two lines rather than text running into the neighbour
            title = f"{mistake['true']} /\n{mistake['predicted']} ({mistake['score']:.2f})"
        ax.set_title(title, fontsize=7)
    return figure
