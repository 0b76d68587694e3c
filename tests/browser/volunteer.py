"""Helpers for the volunteer-flow browser tests: Debian's Chromium, the classify page, screenshots."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1200, "height": 860}
PHONE = {"width": 360, "height": 740}


@contextmanager
def chromium() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run `make system-deps`")
    # Playwright's sync API runs an event loop in this thread; the ORM calls in the tests are synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a test artifact under $SKYLOOP_SCREENSHOT_DIR (default var/test/screenshots)."""
    folder = Path(os.environ.get("SKYLOOP_SCREENSHOT_DIR") or Path(settings.BASE_DIR) / "var" / "test" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class ClassifyPage:
    """The classify page as a volunteer uses it; waits on the page's own state, never on sleeps."""

    def __init__(self, page: Page, base_url: str, workflow_id: int):
        self.page = page
        self.url = f"{base_url}/classify/{workflow_id}/"

    def open(self) -> int:
        self.page.goto(self.url)
        if self.page.locator("dialog#tutorial[open]").count():
            self.page.click("dialog#tutorial button[type=submit]")
        return self.wait_drawn()

    def shown(self) -> int | None:
        value = self.page.get_attribute("#classifier", "data-subject")
        return int(value) if value else None

    def wait_drawn(self, after: int | None = None) -> int:
        """Wait until a subject (other than ``after``) is drawn in the viewer; return its id."""
        self.page.wait_for_function(
            "([after]) => { const d = document.getElementById('classifier').dataset.drawn;"
            " return d && d !== String(after); }",
            arg=[after],
        )
        return int(self.page.get_attribute("#classifier", "data-drawn"))

    def wait_nothing_left(self) -> None:
        self.page.wait_for_function("document.getElementById('question').textContent.startsWith('Nothing left')")

    def wait_sent(self) -> None:
        """Until the outbox is empty: every answer acknowledged by the server."""
        self.page.wait_for_function("document.getElementById('classifier').dataset.waiting === '0'")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)

    def volunteer_key(self) -> str:
        """This browser's anonymous volunteer key, read from its Django session."""
        from labeler.api.volunteers import SESSION_KEY

        store = import_module(settings.SESSION_ENGINE).SessionStore
        cookie = next(c for c in self.page.context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME)
        return f"a:{store(session_key=cookie['value'])[SESSION_KEY]}"
