"""The report's pictures: ``confusion.png``, ``reliability.png`` and ``mistakes.png``.

People would rather look at a heatmap than read a 10 x 10 matrix of counts. Drawn with
matplotlib's object API onto Agg canvases (no pyplot, so no global figure registry or backend
choice leaks into the process), at a fixed DPI and a figure size that depends only on the
number of classes (or of mistakes, and the image size), so the same report always gives
pictures of the same size.
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
    # Fixed margins (constrained layout costs more than the drawing), wide enough for the
    # longest tick label; the colorbar gets its own axes on the right.
    cell_points = side * 72 * 0.7 / classes
    tick_size = max(3.0, min(9.0, 0.7 * cell_points))
    longest = max(len(label) for label in labels)
    margin = min(0.35, 0.04 + longest * tick_size * 0.6 / 72 / side)  # figure fraction
    figure = Figure(figsize=(side, side))
    ax = figure.add_axes((margin + 0.03, margin + 0.03, 0.86 - margin - 0.03, 0.88 - margin - 0.03))
    colorbar_axes = figure.add_axes((0.9, margin + 0.03, 0.025, 0.88 - margin - 0.03))
    shares = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, cax=colorbar_axes, label="share of the true class")
    ax.set_xticks(range(classes), labels, rotation=45 if classes <= 30 else 90, ha="right",
                  rotation_mode="anchor", fontsize=tick_size)
    ax.set_yticks(range(classes), labels, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {report['samples']} test samples, accuracy {report['accuracy']:.2%}")
    # Annotations shrink with the cells; zeros are left blank so the off-diagonal errors show.
    digits = len(str(int(matrix.max())))
    text_size = min(9.0, cell_points / (0.65 * max(digits, 2)))
    if text_size >= 2.0:
        for row, column in matrix.nonzero().tolist():
            ax.text(column, row, str(int(matrix[row, column])), ha="center", va="center", fontsize=text_size,
                    color="white" if shares[row, column] > 0.5 else "black")
    return figure


def _reliability_figure(report: dict[str, Any]) -> Figure:
    """Accuracy against mean confidence per bin above the diagonal of perfect calibration,
    and below it how many predictions fall in each bin."""
    calibration = report["calibration"]
    bins = calibration["bins"]
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    filled = [b for b in bins if b["count"]]
    figure = Figure(figsize=(6.0, 7.0))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    figure.subplots_adjust(left=0.12, right=0.96, bottom=0.08, top=0.94, hspace=0.08)
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
    for center, count in zip(centers, counts, strict=True):
        if count:
            bottom.annotate(str(count), (center, count), ha="center", va="bottom", fontsize=6,
                            xytext=(0, 1), textcoords="offset points")
    bottom.set(xlabel="top-1 confidence", ylabel="predictions", ylim=(0, max(counts) * 1.25 or 1))
    return figure


def _mistakes_figure(report: dict[str, Any], images: torch.Tensor) -> Figure:
    """A grid of the most confident mistakes, each titled "true / predicted (score)".

    The images are placed as pixels (``figimage``), scaled to about ``_CELL`` pixels by whole
    factors so digits stay sharp, rather than one axes per image: 16 axes cost more to draw
    than the rest of the report."""
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
    tiles = _tiles(images[[m["index"] for m in mistakes]])  # (M, h, w, 3) uint8
    tile_h, tile_w = tiles.shape[1:3]
    columns = min(math.ceil(math.sqrt(len(mistakes))), _MISTAKE_COLUMNS)  # near square: 16 -> 4 x 4
    rows = math.ceil(len(mistakes) / columns)
    cell_w, cell_h = max(tile_w, _TITLE_WIDTH) + _GAP, tile_h + _TITLE_HEIGHT + _GAP
    width, height = columns * cell_w + _GAP, rows * cell_h + _HEADER
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    figure.text(0.5, 1 - 0.5 * _HEADER / height, "Most confident mistakes: true / predicted (score)",
                ha="center", va="center", fontsize=10)
    for i, mistake in enumerate(mistakes):
        row, column = divmod(i, columns)
        left = _GAP + column * cell_w + (cell_w - _GAP - tile_w) // 2
        top = height - _HEADER - row * cell_h - _TITLE_HEIGHT  # pixels from the bottom edge
        figure.figimage(tiles[i].numpy(), xo=left, yo=top - tile_h, origin="upper")
        true, predicted = _short(mistake["true"]), _short(mistake["predicted"])
        title = f"{true} / {predicted} ({mistake['score']:.2f})"
        if len(title) > 24:  # two lines rather than text running into the neighbour
            title = f"{true} /\n{predicted} ({mistake['score']:.2f})"
        figure.text((left + tile_w / 2) / width, (top + 3) / height, title, ha="center", va="bottom", fontsize=7)
    return figure


_CELL = 128  # pixels an image is scaled to, about
_TITLE_WIDTH, _TITLE_HEIGHT, _GAP, _HEADER = 120, 26, 14, 30  # pixels


def _tiles(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(M, C, H, W)`` -> RGB uint8 ``(M, h, w, 3)`` of about ``_CELL`` pixels: small
    images grow by a whole factor (nearest), large ones shrink (antialiased)."""
    size = max(images.shape[-2:])
    if size <= _CELL:
        factor = max(1, _CELL // size)
        images = images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    else:
        scale = _CELL / size
        target = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
        images = torch.nn.functional.interpolate(images.float(), size=target, mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous()


def _short(label: str, limit: int = 18) -> str:
    """``label`` cut in the middle to ``limit`` characters: class names often differ at the end."""
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return f"{label[:head]}\u2026{label[-(limit - 1 - head):]}"
