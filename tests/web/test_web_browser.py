"""The page and the docs page in a real browser (Debian's chromium, Playwright) against the real
gunicorn server: classify, errors per image, the model view, a correction reaching the store,
and /schema rendering with no request leaving the origin. Screenshots at desktop and phone
width go to tests/web/screenshots/."""

import base64
import functools
import hashlib
import json
import re

import numpy as np
import pytest
from support.images import band_images, encode

from training.data.sources import DEBIAN_FASHION_MNIST, read_idx

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is missing").expect
LATENCY = re.compile(r"^\d+ ms$")
CORRUPT = b"\x89PNG\r\n\x1a\n" + b"not an image at all" * 4


@functools.cache
def fashion_mnist_test_images() -> np.ndarray | None:
    """The real Fashion-MNIST test images (N, 28, 28) uint8 where Debian's
    dataset-fashion-mnist is installed, else None."""
    path = DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    return read_idx(path) if path.is_file() else None


def pngs(count: int, seed: int) -> list[bytes]:
    """28 x 28 greyscale PNGs: real Fashion-MNIST test images where the dataset is installed
    (the screenshots then show what a person would drop), else the band images the test model
    was trained on. The tests compare the page with the API's answers, so either will do."""
    real = fashion_mnist_test_images()
    if real is None:
        return [encode(image) for image in band_images(count, seed=seed)[0]]
    picked = np.random.default_rng(seed).choice(len(real), size=count, replace=False)
    return [encode(real[i]) for i in picked]


def payloads(files: list[bytes], names: list[str] | None = None) -> list[dict]:
    names = names or [f"image-{i}.png" for i in range(len(files))]
    return [{"name": name, "mimeType": "image/png", "buffer": data} for name, data in zip(names, files, strict=True)]


def top_labels(server, files: list[bytes]) -> list[str]:
    """What the API itself answers for each file: the labels the page must show."""
    return [server.client.post("/predict", content=data, headers={"Content-Type": "image/png"})
            .json()["predictions"][0]["label"] for data in files]


def upload(page, files: list[bytes], names: list[str] | None = None) -> None:
    page.locator("body[data-ready]").wait_for(state="attached")
    page.get_by_label("Images (PNG").set_input_files(payloads(files, names))
    expect(page.locator(".card[data-state]")).to_have_count(len(files), timeout=30_000)


def assert_fits_the_width(page) -> None:
    """Readable on a phone: nothing wider than the screen (no sideways scrolling of the page)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


# ----------------------------------------------------------------------------- classify

def test_three_images_show_their_labels_as_bars(open_page, server, screenshot):
    files = pngs(3, seed=21)
    expected = top_labels(server, files)
    page, log = open_page()
    page.get_by_label("Labels shown per image").fill("4")
    upload(page, files)
    cards = page.locator(".card")
    expect(page.locator(".card[data-state=classified]")).to_have_count(3)
    classes = server.client.get("/models").json()["models"][0]["class_labels"]
    for i, label in enumerate(expected):
        card = cards.nth(i)
        expect(card.locator(".file-name")).to_have_text(f"image-{i}.png")
        bars = card.locator(".bars li")
        expect(bars).to_have_count(4)  # top_k
        expect(bars.first.locator(".bar-label")).to_have_text(label)  # what the API answered
        assert set(bars.locator(".bar-label").all_inner_texts()) <= set(classes)
        assert re.fullmatch(r"\d{1,3}\.\d%", bars.first.locator(".bar-score").inner_text())
        assert bars.first.locator(".fill").bounding_box()["width"] > 0
        expect(card.locator(".answered-by")).to_have_text("fmnist v1")
        expect(card.locator(".latency")).to_have_text(LATENCY)
        expect(card.locator("img.thumb")).to_be_visible()
    expect(page.locator("#classify-status")).to_have_text("Classified 3 images.")
    screenshot(page, "classify-desktop")
    log.assert_clean()

    phone, phone_log = open_page(phone=True)
    upload(phone, files + [CORRUPT], [f"image-{i}.png" for i in range(3)] + ["corrupt.png"])
    assert_fits_the_width(phone)
    screenshot(phone, "classify-phone")
    phone_log.assert_clean()


def test_a_corrupt_file_shows_its_error_and_the_others_still_classify(open_page, screenshot):
    good = pngs(2, seed=22)
    page, log = open_page()
    upload(page, [good[0], CORRUPT, good[1]], ["first.png", "corrupt.png", "third.png"])
    cards = page.locator(".card")
    expect(cards.nth(0)).to_have_attribute("data-state", "classified")
    expect(cards.nth(2)).to_have_attribute("data-state", "classified")
    broken = cards.nth(1)
    expect(broken).to_have_attribute("data-state", "error")
    expect(broken.get_by_role("alert")).to_contain_text("Not an image the service can read")
    expect(broken.get_by_role("alert")).to_contain_text("PNG")  # the API's own words: what it accepts
    expect(broken.get_by_role("button", name="Try again")).to_have_count(0)  # retrying cannot help
    expect(broken.locator(".thumb.broken")).to_have_text("no preview")
    expect(page.locator("#classify-status")).to_have_text(
        "Classified 2 images; 1 image could not be classified.")
    screenshot(page, "classify-error-desktop")
    log.assert_clean()


def test_dropped_images_are_classified(open_page):
    page, log = open_page()
    page.locator("body[data-ready]").wait_for(state="attached")
    encoded = [base64.b64encode(data).decode() for data in pngs(2, seed=27)]
    transfer = page.evaluate_handle("""(images) => {
        const transfer = new DataTransfer();
        images.forEach((b64, i) => transfer.items.add(new File(
            [Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], `dropped-${i}.png`, { type: "image/png" })));
        return transfer;
    }""", encoded)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator(".card[data-state=classified]")).to_have_count(2)
    expect(page.locator(".file-name")).to_have_text(["dropped-0.png", "dropped-1.png"])
    log.assert_clean()


def test_a_busy_service_says_when_to_try_again(open_page):
    """503 with Retry-After, in words, with a button to try again (faked: a real overload
    would need a saturated worker)."""
    def busy(route):
        route.fulfill(status=503, headers={"Retry-After": "2", "Content-Type": "application/json"},
                      body=json.dumps({"error": "overloaded", "detail": "queue full", "request_id": "x"}))

    predict = re.compile(r"/predict\?")
    page, log = open_page(before=lambda page: page.route(predict, busy))
    upload(page, pngs(1, seed=23))
    card = page.locator(".card").first
    expect(card.get_by_role("alert")).to_have_text("The service is busy. Try again in 2 s.")
    page.unroute(predict)
    card.get_by_role("button", name="Try again").click()
    expect(card).to_have_attribute("data-state", "classified")
    log.assert_clean()


# ----------------------------------------------------------------------------- the model view

def test_model_view_shows_metadata_report_and_confusion_matrix(open_page, screenshot):
    for phone, name in ((False, "model-desktop"), (True, "model-phone")):
        page, log = open_page("/#model", phone=phone)
        view = page.locator("#view-model")
        expect(view).to_be_visible()
        confusion = view.get_by_role("img", name=re.compile("^Confusion matrix"))
        expect(confusion).to_be_visible(timeout=20_000)
        expect(confusion).to_have_js_property("complete", True)
        assert confusion.evaluate("image => image.naturalWidth") > 100  # a PNG, decoded
        expect(view.locator(".meta-list")).to_contain_text("fashion-mnist")
        expect(view.locator(".meta-list")).to_contain_text(re.compile(r"\d+\.\d% on 100 images"))
        expect(view.locator(".meta-list")).to_contain_text("1 × 28 × 28")
        expect(view.locator("table.per-class tbody tr")).to_have_count(10)
        expect(view.get_by_role("img", name=re.compile("^Reliability diagram"))).to_be_visible()
        expect(view.get_by_role("img", name=re.compile("^A grid of the test images"))).to_be_visible()
        if phone:
            assert_fits_the_width(page)
        screenshot(page, name)
        log.assert_clean()


def test_training_curves_are_drawn_from_the_history(open_page, trained_registry, screenshot):
    """From ``history`` in GET /models; while /models does not carry it yet, this test adds
    the one metadata.json holds, as the service would serve it."""
    history = json.loads((trained_registry / "fmnist" / "1" / "metadata.json").read_text())["history"]
    assert len(history) == 3

    def with_history(route):
        body = route.fetch().json()
        for info in body["models"]:
            info.setdefault("history", history)
        route.fulfill(json=body)

    page, log = open_page("/#model", before=lambda page: page.route("**/models", with_history))
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(2)
    expect(charts.first).to_have_attribute("aria-label", "Loss per epoch: training and validation")
    for chart in (charts.nth(0), charts.nth(1)):
        expect(chart.locator("polyline")).to_have_count(2)
        expect(chart.locator("circle")).to_have_count(2 * len(history))
    page.get_by_text("The numbers").click()
    expect(page.locator("details.history tbody tr")).to_have_count(len(history))
    screenshot(page, "model-curves-desktop")
    log.assert_clean()


# ----------------------------------------------------------------------------- corrections

def test_a_correction_reaches_the_feedback_store(open_page, feedback_dir, feedback_token, screenshot):
    """Keyboard only: open "Correct this", pick the label, send, give the token once."""
    files = pngs(2, seed=24)
    page, log = open_page()
    upload(page, files)
    cards = page.locator(".card")

    def correct(card, label: str) -> None:
        card.get_by_text("Correct this").focus()
        page.keyboard.press("Enter")  # opens the <details>
        card.get_by_label("True label").select_option(label)
        card.get_by_label("True label").focus()
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")  # the send button

    correct(cards.nth(0), "Bag")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Token")).to_be_focused()
    page.keyboard.type(feedback_token)
    screenshot(page, "feedback-token-desktop")
    page.keyboard.press("Enter")
    expect(cards.nth(0).get_by_role("status")).to_have_text(
        "Thanks: stored as “Bag” for the next training run.")
    sha = hashlib.sha256(files[0]).hexdigest()
    assert (feedback_dir / "Bag" / f"{sha}.png").read_bytes() == files[0]

    correct(cards.nth(1), "T-shirt/top")  # the token is asked once per tab
    expect(cards.nth(1).get_by_role("status")).to_have_text(
        "Thanks: stored as “T-shirt/top” for the next training run.")
    expect(dialog).to_be_hidden()
    assert (feedback_dir / "T-shirt%2Ftop" / f"{hashlib.sha256(files[1]).hexdigest()}.png").exists()
    assert page.evaluate("sessionStorage.getItem('imgclf.feedback-token')") == feedback_token
    assert not [url for url in log.urls if feedback_token in url]  # never in a URL
    log_lines = (feedback_dir / "feedback.jsonl").read_text().splitlines()
    assert all(json.loads(line).get("request_id") for line in log_lines)  # ties it to its answer
    log.assert_clean()


def test_a_refused_token_is_asked_again(open_page, feedback_token):
    page, log = open_page()
    upload(page, pngs(1, seed=25))
    card = page.locator(".card").first
    card.get_by_text("Correct this").click()
    card.get_by_label("True label").select_option("Coat")
    card.get_by_role("button", name="Send the correction").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Token").fill("wrong-token")
    dialog.get_by_role("button", name="Use this token").click()
    expect(dialog).to_contain_text("The service refused that token")
    dialog.get_by_label("Token").fill(feedback_token)
    dialog.get_by_role("button", name="Use this token").click()
    expect(card.get_by_role("status")).to_contain_text("stored as “Coat”")
    log.assert_clean()


def test_correcting_is_hidden_when_feedback_is_disabled(open_page):
    def disabled(route):
        route.fulfill(json={"feedback": False, "feedback_detail": "feedback is disabled: set FEEDBACK_TOKEN"})

    page, log = open_page(before=lambda page: page.route("**/web/config", disabled))
    upload(page, pngs(1, seed=26))
    expect(page.locator(".card[data-state=classified]")).to_have_count(1)
    expect(page.get_by_text("Correct this")).to_have_count(0)
    log.assert_clean()


# ----------------------------------------------------------------------------- the docs page

def test_schema_renders_its_operations_offline_with_predict_first(open_page, server, screenshot):
    page, log = open_page("/schema")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible(timeout=20_000)
    paths = operations.all_inner_texts()
    assert paths[0] == "/predict", paths
    assert {"/feedback", "/models", "/metrics", "/health/ready", "/models/{name}/report"} <= set(paths)
    assert page.locator(".opblock-tag").first.inner_text().startswith("predict")
    expect(page.get_by_role("link", name=re.compile("the page"))).to_have_attribute("href", "/")
    assert f"{server.url}/static/vendor/swagger-ui/swagger-ui-bundle.js" in log.urls
    screenshot(page, "schema-desktop")
    log.assert_clean()  # nothing from a CDN, no CSP violation, no page error

    phone, phone_log = open_page("/schema", phone=True)
    expect(phone.locator(".opblock-summary-path").first).to_have_text("/predict", timeout=20_000)
    screenshot(phone, "schema-phone")
    phone_log.assert_clean()


def test_schema_lists_metrics_and_models_once(open_page):
    page, _ = open_page("/schema")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible(timeout=20_000)
    paths = operations.all_inner_texts()
    assert paths.count("/metrics") == 1 and paths.count("/models") == 1, paths
