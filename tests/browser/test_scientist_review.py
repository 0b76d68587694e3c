"""Issue #7, item 5, in headless Chromium: a project scientist logs in, opens the review queue and
settles subjects with one click (mouse) and by keyboard; the labels are stored, the subjects retire
with reason "expert", their consensus follows the expert, and they leave the queue."""

import uuid

import pytest
from django.contrib.auth import get_user_model

from labeler.classifications.models import Consensus
from labeler.classifications.services import classification_submit
from labeler.review.models import ExpertLabel
from labeler.review.selectors import review_queue
from labeler.subjects.models import ProjectMembership
from labeler.workflows.models import SubjectState
from tests.browser.volunteer import DESKTOP, screenshot

pytestmark = pytest.mark.browser

SMOOTH = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
STAR = [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}]


@pytest.fixture
def disputed(transactional_db):
    """An image workflow where two subjects have split votes and one of them was sent to review."""
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    project = sky_simulate(plan=SkyPlan(project="review", n_images=6, n_spectra=0, seed=5, gold_fraction=0.0))
    workflow = project.workflows.get(kind="image")
    workflow.retire_after, workflow.retire_posterior = 10, 1.0
    workflow.save()
    first, second = workflow.states.order_by("subject_id").values_list("subject_id", flat=True)[:2]
    for sid in (first, second):
        for i, path in enumerate([SMOOTH, SMOOTH, STAR]):
            classification_submit(workflow=workflow, subject_id=sid, volunteer_key=f"sim:{i}", annotation=path,
                                  client_uuid=uuid.uuid4())  # fmt: skip
    SubjectState.objects.filter(workflow=workflow, subject_id=first).update(needs_review=True)
    scientist = get_user_model().objects.create_user("vera", password="rubin-2025")
    ProjectMembership.objects.create(project=project, user=scientist)
    return workflow, first, second


def test_a_scientist_overrides_subjects_from_the_review_queue(live_server, browser, disputed):
    workflow, first, second = disputed
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.goto(f"{live_server.url}/science/workflows/{workflow.id}/review/")
    assert "/accounts/login/" in page.url, "anonymous visitors are asked to log in"
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", "rubin-2025")
    page.click("form.account-form button[type=submit]")
    page.wait_for_selector("#review-queue[data-ready='1']")
    cards = page.locator(".review-card")
    assert cards.first.get_attribute("data-subject") == str(first), "the subject sent to review comes first"
    page.wait_for_function("[...document.querySelectorAll('.review-thumb img')].every(i => i.naturalWidth > 0)")
    screenshot(page, "science-review-queue")

    # One click: "Star or artefact" on the first card; the card leaves, the next one takes the focus.
    page.locator(f".review-card[data-subject='{first}'] button.override-answer", has_text="Star").click()
    page.wait_for_selector(f".review-card[data-subject='{first}']", state="hidden")
    page.wait_for_function(f"document.activeElement.dataset.subject === '{second}'")
    # By keyboard on the card that now has the focus: grade B, then answer 1 ("Smooth").
    page.keyboard.press("b")
    page.keyboard.press("1")
    page.wait_for_selector(f".review-card[data-subject='{second}']", state="hidden")
    assert "labelled" in page.text_content("#review-status")

    star = ExpertLabel.objects.get(subject_id=first)
    assert (star.annotation, star.grade, star.user.username) == ([{"task": "T0", "answer": 2}], "", "vera")
    smooth = ExpertLabel.objects.get(subject_id=second)
    assert (smooth.annotation, smooth.grade) == ([{"task": "T0", "answer": 0}], "B")
    state = SubjectState.objects.get(workflow=workflow, subject_id=first)
    assert (state.status, state.retirement_reason, state.needs_review) == ("retired", "expert", False)
    assert state.gold_answers == {"T0": 2}
    assert Consensus.objects.get(workflow=workflow, subject_id=first).posterior["T0"] == [0.0, 0.0, 1.0]

    page.reload()
    page.wait_for_selector("#review-queue[data-ready='1']")
    left = set(page.locator(".review-card").evaluate_all("cards => cards.map(c => c.dataset.subject)"))
    assert str(first) not in left and str(second) not in left
    assert {item.subject.id for item in review_queue(workflow=workflow)}.isdisjoint({first, second})

    # The subject page shows the votes with weights, the expert label and the consensus that follows it.
    page.goto(f"{live_server.url}/science/workflows/{workflow.id}/subjects/{first}/")
    page.wait_for_selector("#path-picker[data-ready='1']")
    page.wait_for_selector("#subject-viewer[data-ready='1'] canvas")  # the volunteers' viewer, read-only
    assert "vera" in page.text_content(".expert-labels") and page.locator("table.votes tbody tr").count() == 3
    screenshot(page, "science-subject")


def test_a_scientist_gives_a_deeper_path_on_the_subject_page(live_server, browser, disputed):
    workflow, first, _ = disputed
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", "rubin-2025")
    page.click("form.account-form button[type=submit]")
    page.goto(f"{live_server.url}/science/workflows/{workflow.id}/subjects/{first}/")
    page.wait_for_selector("#path-picker[data-ready='1']")
    page.select_option("label[data-task='T0'] select", "2")  # star or artefact -> the artefact question
    page.select_option("label[data-task='T3'] select", "0")
    page.check("input[name=grade][value=A]")
    page.fill("textarea[name=note]", "diffraction spikes")
    page.click("#override-submit")
    page.wait_for_selector(".expert-labels")
    label = ExpertLabel.objects.get()
    assert (label.annotation, label.grade, label.note) == (STAR, "A", "diffraction spikes")
    assert SubjectState.objects.get(workflow=workflow, subject_id=first).gold_answers == {"T0": 2, "T3": 0}
