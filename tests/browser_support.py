"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browser download is not used (there is no internet). Without Chromium the
browser tests are skipped, except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} fehlt (Debian-Paket chromium, `.ci/run` installiert es)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Offline:
    """Lets only loopback requests through and remembers every other one the page tried."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def __call__(self, route: Route, request: Request) -> None:
        host = urlsplit(request.url).hostname
        if request.url.startswith(("data:", "about:")) or host == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(request.url)
            route.abort()


@pytest.fixture
def offline() -> Offline:
    return Offline()


@pytest.fixture
def page(browser: Browser, offline: Offline) -> Iterator[Page]:
    """A phone-sized page with JavaScript switched off: the pages must work without it."""
    context = browser.new_context(viewport={"width": 375, "height": 740}, java_script_enabled=False)
    context.route("**/*", offline)
    yield context.new_page()
    context.close()


def fits(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
