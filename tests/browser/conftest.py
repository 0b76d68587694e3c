"""One headless Debian Chromium per test module; each test opens its own context (fresh storage)."""

import pytest

from tests.browser.volunteer import chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b
