"""The report's pictures are real PNGs of a sensible, stable size, for grey and colour images
and for few or many classes, drawn quickly and without pyplot's global state."""

import io
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

pytest.importorskip("matplotlib")

from training.report.metrics import build_report  # noqa: E402
from training.report.pictures import render_pictures  # noqa: E402

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
NAMES = ("confusion.png", "reliability.png", "mistakes.png")


def evaluation(classes: int, count: int, channels: int, *, seed: int = 0, labels: list[str] | None = None):
    """A report of a fairly good fake model on random images: (report, images)."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, classes, (count,), generator=generator)
    logits = torch.randn(count, classes, generator=generator)
    logits[torch.arange(count), truth] += 3.0
    report = build_report(logits.softmax(dim=1), truth, labels or [f"class-{i}" for i in range(classes)])
    images = torch.randint(0, 256, (count, channels, 28, 28), dtype=torch.uint8, generator=generator)
    return report, images


def decoded(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.verify()  # a complete, uncorrupted PNG
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("channels", [1, 3])
def test_three_valid_pngs_of_sensible_size(channels):
    report, images = evaluation(10, 500, channels, labels=FASHION)
    pictures = render_pictures(report, images)
    assert sorted(pictures) == sorted(NAMES)
    for name, data in pictures.items():
        width, height = decoded(data).size
        assert 300 <= width <= 2500 and 200 <= height <= 2500, (name, width, height)
        assert 5_000 < len(data) < 2_000_000, (name, len(data))
    assert decoded(pictures["confusion.png"]).size[0] == decoded(pictures["confusion.png"]).size[1]


def test_the_same_report_gives_pictures_of_the_same_size():
    first = render_pictures(*evaluation(10, 300, 1, seed=1))
    second = render_pictures(*evaluation(10, 300, 1, seed=2))  # other numbers, same shape of report
    for name in NAMES:
        assert decoded(first[name]).size == decoded(second[name]).size, name


def test_mistakes_grid_shows_the_mistakes_images():
    """A grid of black images except the mistakes, which are white: the picture is mostly bright."""
    report, images = evaluation(10, 400, 1)
    images.zero_()
    for mistake in report["mistakes"]:
        images[mistake["index"]] = 255
    grey = decoded(render_pictures(report, images)["mistakes.png"]).convert("L")
    assert len(report["mistakes"]) == 16
    assert sum(grey.tobytes()) / len(grey.tobytes()) > 200


@pytest.mark.parametrize("classes", [2, 100])
def test_few_and_many_classes_render(classes):
    report, images = evaluation(classes, 2000, 3)
    pictures = render_pictures(report, images)
    width, height = decoded(pictures["confusion.png"]).size
    assert width == height and width <= 2500


def test_a_report_without_mistakes_still_gives_a_picture():
    probabilities = torch.eye(3)[[0, 1, 2, 0]]
    report = build_report(probabilities, torch.tensor([0, 1, 2, 0]), ["a", "b", "c"])
    assert report["mistakes"] == []
    pictures = render_pictures(report, torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    assert all(decoded(data).size[0] > 0 for data in pictures.values())


@pytest.mark.parametrize("images", [torch.zeros(500, 2, 28, 28, dtype=torch.uint8),
                                    torch.zeros(500, 1, 28, 28),
                                    torch.zeros(5, 1, 28, 28, dtype=torch.uint8)])
def test_images_that_do_not_fit_the_report_are_refused(images):
    report, _ = evaluation(10, 500, 1)
    with pytest.raises(ValueError, match="images|outside"):
        render_pictures(report, images)


def test_ten_classes_draw_in_under_two_seconds_without_pyplot():
    report, images = evaluation(10, 2000, 1, labels=FASHION)
    render_pictures(report, images)  # warm: fonts and the first figure
    timings = []
    for _ in range(2):  # the better of two: the machine is shared
        started = time.perf_counter()
        render_pictures(report, images)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 2.0, timings
    assert "matplotlib.pyplot" not in sys.modules, "no global figure registry or backend choice"


def test_metrics_import_without_matplotlib_and_pictures_say_how_to_get_it():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import training.report, training.report.metrics\n"
            "try:\n    import training.report.pictures\n"
            "except ModuleNotFoundError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install" in result.stdout and "[training]" in result.stdout
