"""Issue #7, item 5, in headless Chromium: an admin starts a CSV export on /exports/, watches its
progress bar until a real Celery worker has written the file, downloads it, and astropy reads it."""

import pytest
from astropy.table import Table
from django.contrib.auth import get_user_model

from labeler.catalogs.models import ExportJob
from labeler.review.services import expert_label_create
from tests.browser.volunteer import DESKTOP, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.services]


@pytest.fixture
def sky(transactional_db):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    return sky_simulate(plan=SkyPlan(project="export-ui", n_images=9, n_spectra=0, seed=4))


def test_an_admin_exports_a_csv_catalog_and_downloads_it(live_server, browser, sky, default_queue_worker, tmp_path):
    workflow = sky.workflows.get(kind="image")
    admin = get_user_model().objects.create_user("ada", password="lovelace-1843", is_staff=True)
    settled = workflow.states.order_by("subject_id").first().subject
    expert_label_create(workflow=workflow, subject=settled, user=admin, annotation=[{"task": "T0", "answer": 2}])
    page = browser.new_context(viewport=DESKTOP, accept_downloads=True).new_page()
    page.goto(f"{live_server.url}/exports/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "lovelace-1843")
    page.click("form.account-form button[type=submit]")
    page.wait_for_selector("form.export-form")
    page.select_option("select[name=workflow]", str(workflow.id))
    page.select_option("select[name=format]", "csv")
    page.click("form.export-form button[type=submit]")
    assert "queued" in page.text_content(".message")
    job = ExportJob.objects.get()
    row = f"tr.export-job[data-job='{job.id}']"
    assert page.locator(f"{row} .progress .bar").count() == 1
    # The page refreshes itself every 2 s while a job runs; the worker takes the job and finishes it.
    page.wait_for_selector(f"{row}[data-status='done'] a.download", timeout=120_000)
    assert page.get_attribute(f"{row} .progress", "title") == "100%"
    screenshot(page, "admin-exports-done")
    with page.expect_download() as download_info:
        page.click(f"{row} a.download")
    path = tmp_path / "catalog.csv"
    download_info.value.save_as(path)

    table = Table.read(path, format="ascii.ecsv")
    assert len(table) == 9
    assert sorted(table["external_id"]) == sorted(workflow.states.values_list("subject__external_id", flat=True))
    assert str(table["ra"].unit) == "deg" and str(table["dec"].unit) == "deg"
    assert table.meta["workflow"] == f"{sky.slug}/{workflow.slug}" and table.meta["format"] == "csv"
    row = table[list(table["external_id"]).index(settled.external_id)]
    root_expert = next(name for name in table.colnames if name.endswith("_expert"))  # the first question's
    assert row["retirement_reason"] == "expert" and row[root_expert] == "Star or artefact"
