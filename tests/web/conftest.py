"""Fixtures of the web page tests: the trained test model, the real gunicorn server with
feedback on, and Debian's chromium driven by Playwright (skipped, with the reason, where either
is missing).

Every browser page runs with a guard on its context: a request for any URL outside the server's
origin is aborted and recorded, and the tests assert that there was none; console errors of
the Content-Security-Policy and uncaught page errors are recorded too. Screenshots go to
``tests/web/screenshots/`` (ignored by git), where a person can look at them after a run.
"""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.server import Server
from support.service import MODEL

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
FEEDBACK_TOKEN = "test-feedback-token"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def server(trained_registry, feedback_dir, tmp_path_factory) -> Iterator[Server]:
    """gunicorn with one worker (two cores run the browser too), feedback on."""
    log_path = tmp_path_factory.mktemp("gunicorn") / "server.log"
    server = Server(trained_registry, log_path, model=MODEL, WEB_CONCURRENCY="1",
                    FEEDBACK_TOKEN=FEEDBACK_TOKEN, FEEDBACK_DIR=str(feedback_dir))
    try:
        server.wait_live()
        server.wait_versions(1, workers=1)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless chromium from Debian (Playwright's own browser download cannot work offline)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is missing: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: apt-get install chromium (.ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@dataclass
class PageLog:
    """What a page did that a test must see: requests leaving the origin, CSP and page errors."""

    origin: str
    outside: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.outside == [], f"requests left {self.origin}: {self.outside}"
        assert self.csp == [], f"Content-Security-Policy violations: {self.csp}"
        assert self.errors == [], f"errors in the page: {self.errors}"


@pytest.fixture(scope="session")
def feedback_token() -> str:
    return FEEDBACK_TOKEN


@pytest.fixture
def open_page(browser, server):
    """Factory ``open_page(path="/", phone=False, before=None) -> (page, log)``: a fresh
    context (its own session storage) at desktop or phone width, every request outside the
    server's origin aborted and logged; ``before(page)`` runs before the page loads (to add
    routes of its own)."""
    contexts = []

    def open_(path: str = "/", phone: bool = False, before=None):
        context = browser.new_context(viewport=PHONE if phone else DESKTOP)
        contexts.append(context)
        log = PageLog(server.url)

        def guard(route):
            url = route.request.url
            log.urls.append(url)
            if url.startswith(server.url + "/"):
                route.continue_()
            else:
                log.outside.append(url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.on("console", lambda message: log.csp.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.on("pageerror", lambda error: log.errors.append(str(error)))
        if before is not None:
            before(page)
        page.goto(server.url + path)
        return page, log

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshot():
    """``screenshot(page, name)``: a full-page PNG at tests/web/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take
