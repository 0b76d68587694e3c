"""The classify page in real headless Chromium: hotkeys, the outbox through a server outage,
prefetching, never a seen or retired subject, the tutorial and field guide, and a phone screen."""

import json
import uuid

import pytest

from labeler.classifications.models import Classification
from labeler.workflows.models import SubjectState
from tests.browser.volunteer import DESKTOP, PHONE, ClassifyPage, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture
def image_workflow_live(transactional_db):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    plan = SkyPlan(project="browser", n_images=8, n_spectra=0, n_fields=0, seed=4, gold_fraction=0.0)
    project = sky_simulate(plan=plan)
    return project.workflows.get(kind="image")


def open_page(browser, live_server, workflow, viewport=DESKTOP, **context) -> ClassifyPage:
    page = browser.new_context(viewport=viewport, **context).new_page()
    return ClassifyPage(page, live_server.url, workflow.id)


def test_a_volunteer_classifies_two_galaxies_with_clicks_and_hotkeys(live_server, browser, image_workflow_live):
    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    page = flow.page
    assert page.text_content("#question").startswith("Is the object simply smooth")
    assert page.text_content("#help").startswith("Smooth: light fades evenly")

    page.click("button.answer[data-answer='0']")  # Smooth -> How rounded?
    assert page.text_content("#question") == "How rounded is it?"
    page.click("#back")  # change of mind
    page.click("button.answer[data-answer='1']")  # Features or disk -> edge-on?
    flow.keys("2")  # not edge-on -> anything odd?
    flow.keys("Backspace", "2")  # back within the tree, same answer again
    flow.keys("2")  # no -> the tree ends -> submitted
    second = flow.wait_drawn(after=first)
    page.wait_for_function("document.getElementById('done-count').textContent === '1'")
    flow.wait_sent()

    saved = Classification.objects.get()
    assert saved.subject_id == first and second != first
    assert saved.annotation == [{"task": "T0", "answer": 1}, {"task": "T2", "answer": 1}, {"task": "T4", "answer": 1}]
    assert saved.volunteer_key.startswith("a:") and saved.duration_ms is not None
    assert page.locator("#recent-list .recent-item").count() == 1
    screenshot(page, "classify-desktop-image")


def test_it_is_usable_by_keyboard_alone(live_server, browser, image_workflow_live):
    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    page = flow.page
    page.focus("button.answer[data-answer='0']")
    page.keyboard.press("Tab")  # to the second answer
    page.keyboard.press("Enter")  # Features or disk
    assert page.text_content("#question").startswith("Could this be a disk viewed edge-on")
    focused = page.evaluate("document.activeElement.className")
    assert focused == "answer", "focus stays on the answers when the question changes"
    page.keyboard.press("Enter")  # Yes (edge-on)
    page.keyboard.press("Space")  # No (nothing odd) -> submitted
    flow.wait_drawn(after=first)
    flow.wait_sent()
    assert Classification.objects.get().annotation[1] == {"task": "T2", "answer": 0}
    labelled = page.evaluate(
        """() => [...document.querySelectorAll('#classifier button, #classifier textarea, #classifier input')]
                 .filter((e) => e.offsetParent !== null)
                 .filter((e) => !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels?.length))
                 .map((e) => e.outerHTML)"""
    )
    assert labelled == [], "every visible control has a name"


def test_an_answer_survives_a_server_outage_and_is_stored_once(live_server, browser, image_workflow_live):
    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    page = flow.page
    attempts = []

    def server_down(route):
        attempts.append(json.loads(route.request.post_data)["client_uuid"])
        if len(attempts) == 1:
            route.abort("connectionrefused")  # the network drops
        else:
            route.fulfill(status=503, content_type="text/html", body="<h1>Service Unavailable</h1>")

    page.route("**/api/classifications/", server_down)
    flow.keys("3", "1")  # star or artefact -> star: submitted, while the server is down
    second = flow.wait_drawn(after=first)  # the volunteer carries on regardless
    page.wait_for_selector("#outbox-banner:not([hidden])")
    assert "1 answer waiting" in page.text_content("#outbox-message")
    stored = page.evaluate(f"localStorage.getItem('skyloop:outbox:{image_workflow_live.id}')")
    assert json.loads(stored)[0]["body"]["subject"] == first, "kept on the device"
    page.wait_for_function("document.getElementById('outbox-message').textContent.includes('answer')")
    page.wait_for_timeout(1500)  # let the backoff retry at least once more
    assert Classification.objects.count() == 0
    screenshot(page, "classify-outbox-offline")

    page.unroute("**/api/classifications/")
    page.click("#outbox-retry")
    flow.wait_sent()
    page.wait_for_selector("#outbox-banner", state="hidden")
    assert len(attempts) >= 2 and len(set(attempts)) == 1, "every retry carried the same client_uuid"
    saved = Classification.objects.get()
    assert (saved.subject_id, str(saved.client_uuid)) == (first, attempts[0])
    assert flow.shown() == second


def test_an_answer_kept_on_the_device_is_sent_after_a_reload(live_server, browser, image_workflow_live):
    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    page = flow.page
    page.route("**/api/classifications/", lambda route: route.fulfill(status=502, body="Bad Gateway"))
    flow.keys("3", "2")
    flow.wait_drawn(after=first)
    page.wait_for_selector("#outbox-banner:not([hidden])")
    page.unroute("**/api/classifications/")
    page.close()  # the volunteer closes the tab; the answer waits in localStorage

    again = ClassifyPage(flow.page.context.new_page(), live_server.url, image_workflow_live.id)
    shown = again.open()
    again.wait_sent()
    saved = Classification.objects.get()
    assert saved.subject_id == first and saved.annotation == [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 1}]
    assert shown != first, "a subject waiting in the outbox is not served again"


def test_a_refused_answer_is_shown_and_dropped_only_after_the_volunteer_reads_it(
    live_server, browser, image_workflow_live
):
    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    page = flow.page
    SubjectState.objects.filter(subject_id=first).delete()  # taken out of the workflow meanwhile
    flow.keys("3", "1")
    flow.wait_drawn(after=first)
    page.wait_for_selector("#outbox-dismiss:not([hidden])")
    assert "refused 1 answer" in page.text_content("#outbox-message")
    assert "is not part of workflow" in page.text_content("#outbox-message")
    assert page.text_content("#done-count") == "0"
    key = f"skyloop:outbox:{image_workflow_live.id}"
    assert json.loads(page.evaluate(f"localStorage.getItem('{key}')"))[0]["refused"], "kept until read"
    page.click("#outbox-dismiss")
    page.wait_for_selector("#outbox-banner", state="hidden")
    assert page.evaluate(f"localStorage.getItem('{key}')") is None
    assert Classification.objects.count() == 0


def test_the_next_subject_is_prefetched_before_done(live_server, browser, image_workflow_live):
    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    page = flow.page
    page.wait_for_function(  # the subject on screen and the two queued behind it
        "performance.getEntriesByType('resource').filter((e) => e.name.includes('/next/')).length >= 3"
    )
    flow.keys("3", "1")
    second = flow.wait_drawn(after=first)
    fetches = page.evaluate(
        """([id]) => {
             const done = performance.getEntriesByName('skyloop:done').at(-1).startTime;
             return performance.getEntriesByType('resource')
               .filter((e) => e.name.includes(`/subjects/${id}/`))
               .map((e) => ({url: e.name, beforeDone: e.startTime < done, bytes: e.transferSize}));
           }""",
        [second],
    )
    assert any(f["beforeDone"] for f in fetches), f"the next subject was fetched ahead: {fetches}"
    late = [f for f in fetches if not f["beforeDone"] and f["bytes"] > 0]
    assert late == [], f"after Done it came from the cache, not the network: {late}"
    measure = page.evaluate("performance.getEntriesByName('skyloop:next').map((m) => m.duration)")
    assert len(measure) == 1 and measure[0] >= 0


def test_it_never_serves_a_seen_or_retired_subject(live_server, browser, image_workflow_live):
    from labeler.classifications.services import classification_submit

    flow = open_page(browser, live_server, image_workflow_live)
    first = flow.open()
    volunteer = flow.volunteer_key()
    states = list(SubjectState.objects.filter(workflow=image_workflow_live).exclude(subject_id=first))
    seen, retired = states[0].subject_id, states[1].subject_id
    classification_submit(
        workflow=image_workflow_live,
        subject_id=seen,
        volunteer_key=volunteer,
        annotation=[{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}],
        client_uuid=uuid.uuid4(),
    )
    SubjectState.objects.filter(pk=states[1].pk).update(status=SubjectState.Status.RETIRED)
    flow.page.reload()  # a fresh prefetch, after the changes
    shown = [flow.wait_drawn()]
    while True:
        flow.keys("3", "1")
        flow.page.wait_for_function(
            "([s]) => { const c = document.getElementById('classifier');"
            " return c.dataset.drawn !== String(s) || document.getElementById('question')"
            ".textContent.startsWith('Nothing left'); }",
            arg=[shown[-1]],
        )
        if flow.shown() is None:
            break
        shown.append(flow.wait_drawn(after=shown[-1]))
    flow.wait_sent()
    assert len(shown) == len(set(shown)), "no subject twice"
    assert seen not in shown and retired not in shown
    assert set(shown) == {s.subject_id for s in states[2:]} | {first}


def test_the_page_works_at_phone_width(live_server, browser, image_workflow_live):
    flow = open_page(browser, live_server, image_workflow_live, viewport=PHONE, has_touch=True, is_mobile=True)
    first = flow.open()
    page = flow.page
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "no sideways scrolling"
    for selector in ["#viewer", "button.answer[data-answer='0']", "#back", "#done"]:
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], selector
    assert page.locator("button.answer").first.bounding_box()["height"] >= 44, "thumb-sized answers"
    page.tap("button.answer[data-answer='2']")
    page.tap("button.answer[data-answer='0']")
    flow.wait_drawn(after=first)
    flow.wait_sent()
    assert Classification.objects.get().subject_id == first
    screenshot(page, "classify-phone")


def test_the_tutorial_shows_on_a_first_visit_and_the_field_guide_opens_beside_the_object(
    live_server, browser, image_workflow_live
):
    image_workflow_live.tutorial = "## Welcome\n\nAnswer with the keys **1-9**."
    image_workflow_live.field_guide = "### Smooth galaxies\n\nLight fades evenly from the centre."
    image_workflow_live.save(update_fields=["tutorial", "field_guide"])
    flow = open_page(browser, live_server, image_workflow_live)
    page = flow.page
    page.goto(flow.url)
    page.wait_for_selector("dialog#tutorial[open]")
    assert "Answer with the keys 1-9" in page.text_content("dialog#tutorial")
    assert page.evaluate("document.activeElement.textContent") == "Start classifying"
    page.keyboard.press("1")  # hotkeys do not answer behind the tutorial
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog#tutorial", state="hidden")
    # The dialog's "close" event (which moves focus to the question) is dispatched in a task after
    # the dialog hides: wait for it rather than read focus in between. Enter now means Done.
    page.wait_for_function("document.activeElement?.id === 'question'", timeout=5000)
    first = flow.wait_drawn()
    assert Classification.objects.count() == 0 and page.text_content("#summary") == ""

    page.click("#open-guide")
    page.wait_for_selector("#field-guide:not([hidden])")
    assert page.get_attribute("#open-guide", "aria-expanded") == "true"
    assert page.text_content("#field-guide h3") == "Smooth galaxies"
    flow.keys("3", "1")  # the guide stays open while the volunteer works
    flow.wait_drawn(after=first)
    page.keyboard.press("Escape")
    page.wait_for_selector("#field-guide", state="hidden")

    page.reload()
    flow.wait_drawn()
    assert page.locator("dialog#tutorial[open]").count() == 0, "shown once"
    page.click("#open-tutorial")
    page.wait_for_selector("dialog#tutorial[open]")


def test_enter_presses_done_when_the_workflow_asks_for_marks(live_server, browser, transactional_db):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    project = sky_simulate(plan=SkyPlan(project="enter", n_images=0, n_spectra=3, n_fields=0, seed=5))
    workflow = project.workflows.get(kind="spectrum")
    flow = open_page(browser, live_server, workflow)
    first = flow.open()
    page = flow.page
    assert page.is_visible("#marks-step") and "Then press Done" in page.text_content("#marks-instruction")
    flow.keys("2")  # no DLA: the tree ends, and the volunteer may still draw
    assert page.text_content("#question") == "All questions answered" and page.is_enabled("#done")
    flow.keys("Enter")
    flow.wait_drawn(after=first)
    flow.wait_sent()
    assert Classification.objects.get().annotation == [{"task": "T0", "answer": 1}]
