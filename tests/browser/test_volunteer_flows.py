"""Issue #3, item 6, in real headless Chromium: a volunteer answers a decision tree on an image with
hotkeys, draws two boxes on a survey field, marks a DLA on a spectrum, undoes and edits, and the
database holds exactly what they did."""

import pytest

from labeler.classifications.models import Classification, Consensus
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState
from tests.browser.volunteer import DESKTOP, ClassifyPage, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture
def sky(transactional_db):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    return sky_simulate(plan=SkyPlan(project="flows", n_images=6, n_spectra=8, n_fields=2, seed=11, gold_fraction=0.0))


def open_page(browser, live_server, workflow) -> ClassifyPage:
    return ClassifyPage(browser.new_context(viewport=DESKTOP).new_page(), live_server.url, workflow.id)


def tool_index(workflow, kind: str) -> int:
    return next(i for i, tool in enumerate(workflow.task_tree["marks"]["tools"]) if tool["type"] == kind)


def test_a_volunteer_answers_with_hotkeys_then_edits_one_answer_and_withdraws_another(live_server, browser, sky):
    workflow = sky.workflows.get(kind="image")
    flow = open_page(browser, live_server, workflow)
    page = flow.page
    first = flow.open()
    flow.keys("1", "3", "2")  # smooth -> cigar-shaped -> nothing odd
    second = flow.wait_drawn(after=first)
    page.click("#favourite")
    page.click("#discuss summary")
    page.fill("#comment", "A faint tidal tail to the north?")
    page.focus("#question")
    flow.keys("2", "1", "1")  # features or disk -> edge-on -> something odd
    third = flow.wait_drawn(after=second)
    flow.wait_sent()
    assert page.text_content("#done-count") == "2"
    screenshot(page, "flow-image-desktop")

    page.click("#edit-previous")  # undo: back to the second subject, answers in place
    flow.wait_drawn(after=third)
    assert flow.shown() == second
    assert page.text_content("#summary") == "Your answers: Features or disk → Yes → Yes"
    assert page.get_attribute("#favourite", "aria-pressed") == "true"
    assert page.input_value("#comment") == "A faint tidal tail to the north?"
    flow.keys("Backspace", "2")  # "anything odd?" -> no, on second thoughts
    page.click("#done")
    assert flow.wait_drawn(after=second) == third, "back to the subject put aside"
    flow.wait_sent()
    withdraw = page.locator(f".recent-item[data-subject='{first}'] button", has_text="Withdraw")
    withdraw.click()
    withdraw.click()  # the second press confirms
    flow.wait_sent()
    assert page.text_content("#done-count") == "1"

    kept = Classification.objects.get()  # the first was withdrawn; nothing else was stored
    assert kept.subject_id == second
    assert kept.annotation == [{"task": "T0", "answer": 1}, {"task": "T2", "answer": 0}, {"task": "T4", "answer": 1}]
    assert kept.favourite and kept.comment == "A faint tidal tail to the north?"
    assert kept.edited_at is not None and kept.marks == []
    assert Consensus.objects.get(workflow=workflow, subject_id=second).counts["T4"] == [0, 1], "consensus rebuilt"
    assert not Consensus.objects.filter(workflow=workflow, subject_id=first, n_classifications__gt=0).exists()


def test_a_half_confirmed_withdrawal_survives_the_list_re_rendering(live_server, browser, sky):
    """Withdraw pressed once, then another answer is sent and acknowledged (each re-renders the
    recent list): the second press still withdraws."""
    workflow = sky.workflows.get(kind="image")
    flow = open_page(browser, live_server, workflow)
    page = flow.page
    first = flow.open()
    flow.keys("1", "3", "2")
    second = flow.wait_drawn(after=first)
    flow.wait_sent()
    withdraw = page.locator(f".recent-item[data-subject='{first}'] button.withdraw")
    withdraw.click()
    assert withdraw.text_content() == "Sure? Withdraw"
    flow.keys("1", "3", "2")  # the second subject: added to the list, then acknowledged
    flow.wait_drawn(after=second)
    flow.wait_sent()
    assert page.locator(".recent-item").count() == 2
    assert withdraw.text_content() == "Sure? Withdraw", "still armed after the list was re-rendered"
    withdraw.click()
    flow.wait_sent()
    assert page.text_content("#done-count") == "1"
    assert list(Classification.objects.values_list("subject_id", flat=True)) == [second]


def test_a_volunteer_draws_two_boxes_on_a_field(live_server, browser, sky):
    workflow = sky.workflows.get(kind="field")
    tools = {tool["label"].lower(): i for i, tool in enumerate(workflow.task_tree["marks"]["tools"])}
    flow = open_page(browser, live_server, workflow)
    page = flow.page
    field = flow.open()
    subject = Subject.objects.get(pk=field)
    rows = subject.metadata["shape"][1]
    # Box the two brightest objects, as a volunteer would, corner to corner, each with its tool.
    first, *others = sorted(subject.truth["boxes"], key=lambda b: -b["snr"])
    second = next(b for b in others if apart(first, b, margin=10))  # a press near a mark would move it
    drawn = [(tools[b["label"]], b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"]) for b in (first, second)]
    for tool, *corners in drawn:
        page.click(f".iv-tool[data-tool='{tool}']")
        drag_in_data(page, rows, *corners)
    page.wait_for_function("document.querySelector('.iv-count').textContent === '2 marks'")
    assert page.text_content("#mark-count") == "2"
    trail = subject.truth["class"] == "trail"
    flow.keys("1" if trail else "2")  # the field's question, by hotkey
    screenshot(page, "flow-field-boxes")
    flow.keys("Enter")  # Done, from the image the volunteer just drew on
    flow.wait_drawn(after=field)
    flow.wait_sent()

    saved = Classification.objects.get()
    assert saved.subject_id == field and saved.annotation == [{"task": "T0", "answer": 0 if trail else 1}]
    assert len(saved.marks) == 2
    for mark, (tool, x0, y0, x1, y1) in zip(saved.marks, drawn, strict=True):
        assert mark["tool"] == tool
        assert mark["x"] == pytest.approx(x0, abs=1.0) and mark["y"] == pytest.approx(y0, abs=1.0)
        assert mark["width"] == pytest.approx(x1 - x0, abs=1.0)
        assert mark["height"] == pytest.approx(y1 - y0, abs=1.0)


def apart(a: dict, b: dict, margin: float) -> bool:
    return (
        a["x"] + a["width"] + margin < b["x"]
        or b["x"] + b["width"] + margin < a["x"]
        or a["y"] + a["height"] + margin < b["y"]
        or b["y"] + b["height"] + margin < a["y"]
    )


def drag_in_data(page, rows: int, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag with the mouse between two points given in data pixels (row 0 at the bottom of ``rows``)."""
    page.evaluate("document.querySelector('.iv-stage').scrollIntoView({block: 'start'})")
    stage = page.locator(".iv-stage").bounding_box()
    scale, left, top = (float(v) for v in page.get_attribute(".iv-stage", "data-view").split(","))

    def screen(x, y):
        return stage["x"] + left + x * scale, stage["y"] + top + (rows - y) * scale

    page.mouse.move(*screen(x0, y0))
    page.mouse.down()
    page.mouse.move(*screen((x0 + x1) / 2, (y0 + y1) / 2), steps=4)
    page.mouse.move(*screen(x1, y1), steps=4)
    page.mouse.up()


def test_a_volunteer_marks_a_damped_lyman_alpha_absorber(live_server, browser, sky):
    workflow = sky.workflows.get(kind="spectrum")
    absorber = tool_index(workflow, "absorber")
    states = SubjectState.objects.filter(workflow=workflow).select_related("subject")
    strongest = max((s for s in states if s.subject.truth["class"] == "dla"), key=lambda s: s.subject.truth["log_nhi"])
    states.exclude(pk=strongest.pk).update(status=SubjectState.Status.RETIRED)  # only that one is served
    truth = strongest.subject.truth
    flow = open_page(browser, live_server, workflow)
    page = flow.page
    assert flow.open() == strongest.subject_id
    flow.keys("1")  # yes, there is a DLA
    page.click(f".sv-tool[data-tool='{absorber}']")
    click_wavelength(page, 1215.67 * (1 + truth["z_abs"]))
    page.wait_for_function("document.getElementById('mark-count').textContent === '1'")
    page.fill(".sv-nhi input[type=number]", "20.6")
    page.dispatch_event(".sv-nhi input[type=number]", "change")
    screenshot(page, "flow-spectrum-dla")
    page.click("#done")
    flow.wait_nothing_left()
    flow.wait_sent()

    saved = Classification.objects.get()
    assert saved.subject_id == strongest.subject_id and saved.annotation == [{"task": "T0", "answer": 0}]
    [mark] = saved.marks
    assert mark["tool"] == absorber and mark["log_nhi"] == pytest.approx(20.6)
    assert mark["z"] == pytest.approx(truth["z_abs"], abs=0.01)


def click_wavelength(page, wavelength: float) -> None:
    """Click the spectrum plot at an observed wavelength, half-way up the plotting box."""
    canvas = page.locator(".sv-canvas").bounding_box()
    lo, hi = (float(v) for v in page.get_attribute(".sv-canvas", "data-view").split(","))
    left, top, width, height = (float(v) for v in page.get_attribute(".sv-canvas", "data-box").split(","))
    x = canvas["x"] + left + (wavelength - lo) / (hi - lo) * width
    page.mouse.click(x, canvas["y"] + top + height / 2)
