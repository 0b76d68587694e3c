"""Issue #7 item 2 and #5's live progress, in headless Chromium: a scientist signs in, reads the
project dashboard, filters and sorts the consensus browser, and watches a training's progress bar
move on the model page while the test advances the ModelVersion row underneath it."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from labeler.classifications.models import Consensus
from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion
from labeler.subjects.models import ProjectMembership
from mlcore.tasktree import path_for_answers
from tests.browser.volunteer import DESKTOP, screenshot

pytestmark = pytest.mark.browser

ANSWERS = [0, 0, 0, 1, 1, 2]  # the first question's answer given to subjects 0..5 by three volunteers


@pytest.fixture
def sky(transactional_db):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    project = sky_simulate(plan=SkyPlan(project="dash-ui", n_images=8, n_spectra=0, n_fields=0, seed=5))
    workflow = project.workflows.get(kind="image")
    workflow.train_min_new_labels = 10_000  # no training queued by these submits: the test drives the model rows
    workflow.save()
    states = list(workflow.states.order_by("subject_id"))
    for state, answer in zip(states, ANSWERS, strict=False):
        path = path_for_answers(
            workflow.task_tree, lambda task, n, a=answer: a if task == workflow.task_tree["first"] else 0
        )
        for v in range(3):
            classification_submit(
                workflow=workflow, subject_id=state.subject_id, volunteer_key=f"sim:{v}", annotation=path,
                client_uuid=uuid.uuid4(),
            )  # fmt: skip
    labels = [a["label"] for a in workflow.task_tree["tasks"][workflow.task_tree["first"]]["answers"]]
    ModelVersion.objects.create(
        workflow=workflow, number=1, kind="question_head", status="active", label_count=6,
        trained_at=timezone.now(), metrics={
            "val_accuracy": 0.8,
            "curve": [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e} for e in range(1, 6)],
            "confusion": {"labels": labels, "matrix": [[3, 1, 0], [1, 4, 0], [0, 0, 2]]},
            "reliability": {  # 10 equal-width bins, as mlcore.calibration.heldout_report gives them
                "confidence": [None] * 4 + [0.46, 0.55, 0.66, 0.74, 0.86, 0.97],
                "accuracy": [None] * 4 + [0.4, 0.5, 0.7, 0.7, 0.9, 0.95],
                "count": [0] * 4 + [2, 3, 4, 5, 8, 20],
            },
            "ece": 0.031,
        },
    )  # fmt: skip
    ModelVersion.objects.create(
        workflow=workflow, number=2, kind="question_head", status="training", label_count=6, progress=0.1,
        started_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    return workflow


def sign_in(browser, live_server, workflow):
    user = get_user_model().objects.create_user("vera", password="rubin-1928-galaxies")
    ProjectMembership.objects.create(project=workflow.project, user=user)
    page = browser.new_context(viewport=DESKTOP).new_page()
    page.goto(f"{live_server.url}/science/")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", "rubin-1928-galaxies")
    page.click("form.account-form button[type=submit]")
    page.wait_for_selector("section.project")
    return page


def test_a_scientist_reads_the_dashboard_filters_consensus_and_watches_training(live_server, browser, sky):
    workflow = sky
    page = sign_in(browser, live_server, workflow)
    assert page.locator("header nav a", has_text="Science").count() == 1
    page.click(f"section.project[data-project='{workflow.project.slug}'] h2 a")

    board = page.locator(f"section.workflow-board[data-workflow='{workflow.id}']")
    page.wait_for_selector(f"section.workflow-board[data-workflow='{workflow.id}'] svg.hourly[data-drawn='1']")
    assert board.locator("svg.hourly rect.bar").count() == 48
    assert board.locator(".n-classifications").text_content() == "18"
    assert board.locator(".n-volunteers").text_content() == "3"
    assert board.locator(".training-run[data-version='2']").count() == 1
    screenshot(page, "science-project")

    board.locator("a", has_text="Consensus browser").click()
    page.wait_for_selector("#consensus-table")
    assert page.locator("tr.consensus-row").count() == 6
    page.select_option("#f-answer", "1")
    page.click("#consensus-filters button[type=submit]")
    page.wait_for_url("**answer=1**")
    expected = sorted(
        c.subject_id for c in Consensus.objects.filter(workflow=workflow)
        if max(range(3), key=c.posterior["T0"].__getitem__) == 1
    )  # fmt: skip
    assert expected, "the simulated votes gave no subject the second answer"
    shown = [int(x) for x in page.locator("tr.consensus-row").evaluate_all("rows => rows.map(r => r.dataset.subject)")]
    assert sorted(shown) == expected
    assert set(page.locator("tr.consensus-row td.crowd").all_text_contents()) == {"Features or disk"}
    page.click("#consensus-table th a:has-text('posterior')")
    page.wait_for_url("**sort=posterior**")
    assert "answer=1" in page.url, "sorting keeps the filters"
    screenshot(page, "science-consensus")

    page.goto(f"{live_server.url}/science/workflows/{workflow.id}/models/")
    run = "#training-runs .training-run[data-version='2']"
    page.wait_for_selector(f"{run} .progress[aria-valuenow='10']")
    for plot in ("learning-curve", "epoch-curve", "confusion", "reliability"):
        page.wait_for_selector(f"svg#{plot}[data-drawn='1']")
    assert page.locator("svg#confusion rect").count() == 9
    assert page.locator("svg#reliability rect.bar:not(.count)").count() == 6
    assert "ECE 0.031" in page.text_content("#selected-version")

    # The worker reports progress; the page polls every 2 s and the bar follows.
    ModelVersion.objects.filter(workflow=workflow, number=2).update(
        progress=0.6, progress_detail={"phase": "training", "epoch": 3, "epochs": 10, "step": 40, "eta_s": 75}
    )
    page.wait_for_selector(f"{run} .progress[aria-valuenow='60']", timeout=15_000)
    assert page.locator(f"{run} .run-detail").text_content() == "60% · training · epoch 3/10 · about 1 min 15 s left"
    assert page.locator(f"{run} .bar").evaluate("bar => bar.style.width") == "60%"
    screenshot(page, "science-models-training")

    # The run finishes: the bar goes and the page reloads to list the new version.
    ModelVersion.objects.filter(workflow=workflow, number=2).update(status="ready", progress=1.0)
    page.wait_for_selector("#versions tr[data-version='2'][data-status='ready']", timeout=15_000)
    assert page.locator("#training-runs .training-run").count() == 0
