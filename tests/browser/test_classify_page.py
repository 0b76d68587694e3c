"""A volunteer in real headless Chromium: answer the tree with clicks and hotkeys, get the next object."""

import os

import pytest
from playwright.sync_api import sync_playwright

from labeler.classifications.models import Classification

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run `make system-deps`")
    # Playwright's sync API runs an event loop in this thread; the ORM calls in the test are synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1100, "height": 800})
        browser.close()


def test_a_volunteer_classifies_two_galaxies_with_clicks_and_hotkeys(live_server, page, transactional_db):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    workflow = sky_simulate(plan=SkyPlan(project="browser", n_images=6, n_spectra=0, seed=4)).workflows.get(
        kind="image"
    )
    page.goto(f"{live_server.url}/classify/{workflow.id}/")
    page.wait_for_function("document.getElementById('subject-image').naturalWidth > 0")
    first = page.get_attribute("#subject-image", "src")
    assert page.text_content("#question").startswith("Is the object simply smooth")

    page.click("button.answer[data-answer='0']")  # Smooth -> How rounded?
    page.click("#back")  # change of mind
    page.click("button.answer[data-answer='1']")  # Features or disk -> edge-on?
    page.keyboard.press("2")  # not edge-on -> anything odd?
    page.keyboard.press("2")  # no -> tree ends -> submit
    page.wait_for_function(f"document.getElementById('subject-image').getAttribute('src') !== {first!r}")
    page.wait_for_function("document.getElementById('done-count').textContent === '1'")

    saved = Classification.objects.get()
    assert [step["answer"] for step in saved.annotation] == [1, 1, 1]
    assert saved.volunteer_key.startswith("a:") and saved.duration_ms is not None
    page.screenshot(path=str(os.environ.get("SKYLOOP_SCREENSHOT", "/tmp/skyloop-classify.png")))
