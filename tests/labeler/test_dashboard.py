"""Issue #7 item 2 (scientist dashboard, consensus browser, model page) and #5's live progress:
selectors on data with known numbers, the permission matrix of every page, and query counts."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from labeler.classifications.models import Classification, Consensus
from labeler.dashboard import consensus as browser
from labeler.dashboard import selectors, versions
from labeler.learning.models import ModelVersion, Prediction
from labeler.subjects.models import Project, ProjectMembership, Subject
from labeler.workflows.models import SubjectState, Workflow

TREE = {
    "first": "T0",
    "tasks": {
        "T0": {"question": "Shape?", "answers": [{"label": "Smooth"}, {"label": "Disk"}, {"label": "Star"}]},
    },
}


def make_workflow(slug: str = "sky", **kwargs) -> Workflow:
    project, _ = Project.objects.get_or_create(slug=slug, defaults={"name": slug.title()})
    return Workflow.objects.create(
        project=project, slug="shapes", name="Shapes", kind="image", task_tree=TREE, **kwargs
    )


def make_subject(workflow: Workflow, n: int, *, posterior=None, agreement=0.5, votes=3, status="active",
                 review=False, reason="") -> Subject:  # fmt: skip
    """A subject with a state and (if ``posterior``) a consensus of ``votes`` votes."""
    subject = Subject.objects.create(
        project=workflow.project, kind="image", external_id=f"obj-{n}", data_file=f"none/{n}.fits",
        data_sha256=f"{n:064x}",
    )  # fmt: skip
    SubjectState.objects.create(
        workflow=workflow, subject=subject, status=status, classification_count=votes, needs_review=review,
        retirement_reason=reason, retired_at=timezone.now() if status == "retired" else None,
    )  # fmt: skip
    if posterior is not None:
        Consensus.objects.create(
            workflow=workflow, subject=subject, n_classifications=votes, counts={"T0": [votes, 0, 0]},
            fractions={"T0": posterior}, posterior={"T0": posterior}, agreement={"T0": agreement},
        )  # fmt: skip
    return subject


def classify(
    workflow: Workflow, subject: Subject, volunteer: str, *, hours_ago: float = 0.0, now=None
) -> Classification:
    c = Classification.objects.create(
        client_uuid=uuid.uuid4(), workflow=workflow, workflow_version=1, subject=subject, volunteer_key=volunteer,
        annotation=[{"task": "T0", "answer": 0}],
    )  # fmt: skip
    Classification.objects.filter(pk=c.pk).update(created_at=(now or timezone.now()) - timedelta(hours=hours_ago))
    return c


def make_version(workflow: Workflow, number: int, status: str = "active", **kwargs) -> ModelVersion:
    return ModelVersion.objects.create(workflow=workflow, number=number, kind="question_head", status=status, **kwargs)


def predict(version: ModelVersion, subject: Subject, probs: list[float]) -> Prediction:
    return Prediction.objects.create(
        model_version=version, subject=subject, probabilities={"T0": probs}, entropy=0.1, bald=0.1, score=0.1
    )


# ---------------------------------------------------------------- consensus browser


@pytest.fixture
def browsed(db):
    """Six subjects with known consensus; an active model that disagrees on two of them."""
    wf = make_workflow()
    s = [
        make_subject(wf, 0, posterior=[0.9, 0.05, 0.05], agreement=0.8),
        make_subject(wf, 1, posterior=[0.2, 0.7, 0.1], agreement=0.3),
        make_subject(wf, 2, posterior=[0.1, 0.1, 0.8], agreement=0.6, status="retired", reason="confident_consensus"),
        make_subject(
            wf, 3, posterior=[0.3, 0.6, 0.1], agreement=0.2, status="retired", review=True, reason="expert_review"
        ),  # fmt: skip
        make_subject(wf, 4, posterior=[0.99, 0.005, 0.005], agreement=0.95, status="retired", reason="blank"),
        make_subject(wf, 5),  # no consensus yet: not in the browser
    ]
    model = make_version(wf, 1)
    predict(model, s[0], [0.8, 0.1, 0.1])  # agrees
    predict(model, s[1], [0.1, 0.2, 0.7])  # disagrees: star vs disk
    predict(model, s[3], [0.9, 0.05, 0.05])  # disagrees: smooth vs disk
    return wf, s, model


def ids(workflow, model=None, **params):
    filters = browser.ConsensusFilters.from_query({k: str(v) for k, v in params.items()}, n_answers=3)
    return list(browser.consensus_subject_ids(workflow=workflow, filters=filters, model=model))


def test_the_browser_filters_by_class_posterior_agreement_status_and_disagreement(browsed):
    wf, s, model = browsed
    assert ids(wf, model) == [x.id for x in s[:5]]
    assert ids(wf, model, answer=1) == [s[1].id, s[3].id]
    assert ids(wf, model, posterior_min=0.75) == [s[0].id, s[2].id, s[4].id]
    assert ids(wf, model, posterior_max=0.75, answer=1) == [s[1].id, s[3].id]
    assert ids(wf, model, agreement_min=0.5, agreement_max=0.9) == [s[0].id, s[2].id]
    assert ids(wf, model, status="active") == [s[0].id, s[1].id]
    assert ids(wf, model, status="retired") == [s[2].id, s[4].id]
    assert ids(wf, model, status="review") == [s[3].id]
    assert ids(wf, model, disagreement=1) == [s[1].id, s[3].id]
    assert ids(wf, None, disagreement=1) == []


def test_the_browser_sorts_and_reports_classes_and_the_models_view(browsed):
    wf, s, model = browsed
    assert ids(wf, model, sort="-posterior") == [s[4].id, s[0].id, s[2].id, s[1].id, s[3].id]
    assert ids(wf, model, sort="agreement") == [s[3].id, s[1].id, s[2].id, s[0].id, s[4].id]
    assert ids(wf, model, sort="-model") == [s[3].id, s[0].id, s[1].id, s[2].id, s[4].id]  # no prediction: last
    wanted = [s[3].id, s[1].id, s[2].id]
    listed = browser.consensus_rows(workflow=wf, subject_ids=wanted, model=model)
    assert [r["subject_id"] for r in listed] == wanted
    rows = {r["subject_id"]: r for r in listed}
    assert rows[s[1].id]["crowd_class"] == 1 and rows[s[1].id]["model_class"] == 2
    assert rows[s[1].id]["model_posterior"] == pytest.approx(0.7)
    assert rows[s[2].id]["model_class"] is None  # retired before the model: no prediction
    assert rows[s[3].id]["status"] == "retired" and rows[s[3].id]["needs_review"]


def test_a_tie_goes_to_the_first_answer_in_the_class_column_and_filter(db):
    wf = make_workflow()
    tie = make_subject(wf, 0, posterior=[0.2, 0.4, 0.4])
    assert ids(wf, answer=1) == [tie.id] and ids(wf, answer=2) == [] and ids(wf, answer=0) == []
    [row] = browser.consensus_rows(workflow=wf, subject_ids=[tie.id], model=None)
    assert row["crowd_class"] == 1 and row["model_class"] is None


@pytest.mark.parametrize(
    "params", [{"answer": "3"}, {"answer": "x"}, {"posterior_min": "1.5"}, {"status": "gone"}, {"sort": "name"}]
)
def test_the_browser_refuses_filters_it_does_not_understand(params):
    with pytest.raises(browser.ConsensusFilterError):
        browser.ConsensusFilters.from_query(params, n_answers=3)


def test_the_browser_pages_and_sorts_in_sql_with_a_fixed_number_of_queries(
    client, django_assert_max_num_queries, browsed
):
    wf, s, model = browsed
    admin = User.objects.create_user("boss", is_staff=True)
    client.force_login(admin)
    url = reverse("science-consensus", args=[wf.id])
    with django_assert_max_num_queries(QUERY_BUDGET) as few:
        assert client.get(url, {"sort": "-posterior"}).status_code == 200
    for n in range(6, 66):
        make_subject(wf, n, posterior=[0.5, 0.3, 0.2])
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        response = client.get(url, {"sort": "-posterior", "page": "2"})
    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries), "one query per row crept in"
    page = response.context["page"]
    assert page.paginator.count == 65 and len(response.context["rows"]) == 15


def test_a_bad_filter_is_a_400_with_the_reason(client, browsed):
    wf, _, _ = browsed
    client.force_login(User.objects.create_user("boss", is_staff=True))
    response = client.get(reverse("science-consensus", args=[wf.id]), {"posterior_min": "2"})
    assert response.status_code == 400
    assert "posterior_min must be between 0 and 1" in response.content.decode()


def test_the_consensus_page_shows_the_filtered_rows_with_labels_and_links(client, browsed):
    wf, s, model = browsed
    client.force_login(User.objects.create_user("boss", is_staff=True))
    response = client.get(reverse("science-consensus", args=[wf.id]), {"disagreement": "1"})
    html = response.content.decode()
    assert [r["subject_id"] for r in response.context["rows"]] == [s[1].id, s[3].id]
    assert response.context["rows"][0]["crowd_label"] == "Disk" and response.context["rows"][0]["model_label"] == "Star"
    assert 'class="consensus-row disagrees"' in html
    assert reverse("subject-preview", args=[s[1].id, s[1].data_sha256[:12]]) in html


# ---------------------------------------------------------------- dashboard selectors


def test_the_dashboard_counts_classifications_per_hour_volunteers_and_retirement(db):
    wf = make_workflow(train_min_new_labels=4, label_min_votes=2)
    s = [make_subject(wf, i, posterior=[0.6, 0.3, 0.1], votes=i) for i in range(4)]
    make_subject(wf, 10, status="retired", reason="confident_consensus")
    make_subject(wf, 11, status="retired", reason="confident_consensus")
    make_subject(wf, 12, status="retired", reason="expert_review", review=True)
    now = timezone.now()
    classify(wf, s[0], "a:1", hours_ago=0, now=now)
    classify(wf, s[1], "a:1", hours_ago=0.01, now=now)
    classify(wf, s[0], "a:2", hours_ago=5, now=now)
    classify(wf, s[0], "sim:3", hours_ago=30, now=now)
    classify(wf, s[1], "sim:3", hours_ago=60, now=now)  # older than the 48 h chart, still a volunteer
    hours = selectors.classifications_per_hour(workflow=wf, now=now)
    assert len(hours) == 48 and sum(h["n"] for h in hours) == 4
    assert hours[-1]["hour"] == now.replace(minute=0, second=0, microsecond=0)
    by_hour = {h["hour"]: h["n"] for h in hours}
    assert by_hour[(now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)] == 1
    assert selectors.volunteer_counts(workflow=wf, now=now) == {"total": 3, "last_24h": 2}
    assert selectors.retirement_reasons(workflow=wf) == [
        {"reason": "confident_consensus", "n": 2}, {"reason": "expert_review", "n": 1},
    ]  # fmt: skip
    numbers = selectors.workflow_numbers(workflows=[wf])[wf.id]
    assert (numbers.n_subjects, numbers.n_active, numbers.n_retired, numbers.n_review) == (7, 4, 3, 1)
    assert numbers.n_classifications == 5 and numbers.retired_fraction == pytest.approx(3 / 7)


def test_the_loop_status_counts_labels_since_the_last_model_and_shows_training(db):
    wf = make_workflow(train_min_new_labels=4, label_min_votes=2)
    for i in range(6):
        make_subject(wf, i, posterior=[0.6, 0.3, 0.1], votes=2 if i < 5 else 1)  # 5 labelled
    make_version(wf, 1, status="active", label_count=2)
    make_version(wf, 2, status="failed", label_count=4)  # failed versions do not count
    running = make_version(wf, 3, status="training", label_count=5, progress=0.5,
                           started_at=timezone.now() - timedelta(seconds=60))  # fmt: skip
    versions_ = selectors.model_versions_of(workflow=wf)
    status = selectors.loop_status(workflow=wf, versions=versions_)
    assert status.labelled == 5 and status.since_last_model == 0  # v3 was queued with all 5
    assert [v.number for v in status.training] == [3]
    assert status.runs[0]["progress"] == 0.5 and status.runs[0]["eta_s"] == pytest.approx(60, abs=2)
    running.delete()
    status = selectors.loop_status(workflow=wf, versions=selectors.model_versions_of(workflow=wf))
    assert status.since_last_model == 3 and status.labels_fraction == pytest.approx(0.75)
    assert status.queue_backend in ("redis", "database")


def test_projects_overview_shows_scientists_their_projects_and_admins_all(db):
    mine, theirs = make_workflow("mine"), make_workflow("theirs")
    scientist = User.objects.create_user("sci")
    ProjectMembership.objects.create(project=mine.project, user=scientist)
    assert [p.slug for p, _ in selectors.projects_overview(user=scientist)] == ["mine"]
    admin = User.objects.create_user("boss", is_staff=True)
    overview = selectors.projects_overview(user=admin)
    assert [p.slug for p, _ in overview] == ["mine", "theirs"]
    assert [n.workflow.id for n in overview[1][1]] == [theirs.id]


# ---------------------------------------------------------------- model page readers


def test_the_model_page_reads_new_metrics_and_survives_old_or_broken_ones(db):
    wf = make_workflow()
    # NaN never reaches JSON columns (SQLite refuses it, PostgreSQL too), but it lives in memory after a fit.
    old = ModelVersion(workflow=wf, number=1, status="retired", label_count=40,
                       metrics={"val_accuracy": 0.7, "val_loss": float("nan")})  # fmt: skip
    new = make_version(
        wf,
        2,
        label_count=80,
        metrics={
            "val_accuracy": 0.85,
            "history": [
                {"epoch": 1, "train_loss": 1.2, "val_loss": 1.3},
                {"epoch": 2, "train_loss": 0.8, "val_loss": "x"},
            ],
            "confusion": {"labels": ["Smooth", "Disk", "Star"], "matrix": [[5, 1, 0], [2, 6, 0], [0, 0, 3]]},
            "reliability": {"confidence": [0.55, 0.95], "accuracy": [0.5, 0.9], "count": [10, 30], "ece": 0.04},
        },
    )
    broken_metrics = {"confusion": {"labels": ["a"], "matrix": [[1, 2]]}, "reliability": [1, 2]}
    broken = make_version(wf, 3, status="ready", label_count=90, metrics=broken_metrics)
    assert versions.learning_curve([new, broken, old]) == [
        {"number": 1, "label_count": 40, "accuracy": 0.7}, {"number": 2, "label_count": 80, "accuracy": 0.85},
    ]  # fmt: skip
    assert versions.epoch_curve(new)[1] == {"epoch": 2.0, "train_loss": 0.8, "val_loss": None, "val_accuracy": None}
    assert versions.confusion(new)["matrix"][1] == [2.0, 6.0, 0.0]
    assert versions.reliability(new)["ece"] == 0.04
    assert (
        versions.confusion(broken) is None and versions.reliability(broken) is None and versions.epoch_curve(old) == []
    )
    assert dict(versions.scalar_metrics(old)) == {"val_accuracy": 0.7, "val_loss": None}


def test_progress_prefers_the_workers_eta_and_detail(db):
    wf = make_workflow()
    v = make_version(
        wf,
        1,
        status="training",
        progress=0.4,
        started_at=timezone.now() - timedelta(seconds=40),
        progress_detail={"phase": "training", "epoch": 3, "epochs": 20, "step": 12, "eta_s": 95.0},
    )
    [run] = versions.training_progress(workflow=wf)
    assert run["number"] == 1 and run["phase"] == "training" and (run["epoch"], run["epochs"]) == (3, 20)
    assert run["eta_s"] == 95.0
    ModelVersion.objects.filter(pk=v.pk).update(progress_detail={}, status="ready")
    assert versions.training_progress(workflow=wf) == []


# ---------------------------------------------------------------- permissions

QUERY_BUDGET = 12


@pytest.fixture
def personas(db):
    """The project's scientist, a scientist of another project, a volunteer and an admin."""
    wf = make_workflow("home")
    other = make_workflow("elsewhere")
    people = {
        "scientist": User.objects.create_user("sci"),
        "other_scientist": User.objects.create_user("other"),
        "volunteer": User.objects.create_user("vol"),
        "admin": User.objects.create_user("boss", is_staff=True),
    }
    ProjectMembership.objects.create(project=wf.project, user=people["scientist"])
    ProjectMembership.objects.create(project=other.project, user=people["other_scientist"])
    return wf, people


def page_urls(wf):
    return {
        "project": reverse("science-project", args=[wf.project.slug]),
        "consensus": reverse("science-consensus", args=[wf.id]),
        "models": reverse("science-models", args=[wf.id]),
        "progress": reverse("science-models-progress", args=[wf.id]),
    }


@pytest.mark.parametrize(
    "who, home, scoped",
    [("anonymous", 302, 302), ("volunteer", 403, 403), ("other_scientist", 200, 403), ("scientist", 200, 200),
     ("admin", 200, 200)],
)  # fmt: skip
def test_every_page_lets_in_only_the_projects_scientists_and_admins(client, personas, who, home, scoped):
    wf, people = personas
    if who != "anonymous":
        client.force_login(people[who])
    response = client.get(reverse("science-home"))
    assert response.status_code == home
    if home == 302:
        assert response["Location"].startswith(reverse("login"))
    for name, url in page_urls(wf).items():
        assert client.get(url).status_code == scoped, name
    for url in (reverse("science-model-rollback", args=[wf.id]), reverse("science-model-promote", args=[wf.id, 1])):
        assert client.post(url).status_code in ((scoped,) if scoped != 200 else (302, 404)), url


def test_the_nav_shows_science_only_to_scientists_and_admins(client, personas):
    wf, people = personas
    link = f'href="{reverse("science-home")}"'
    assert link not in client.get(reverse("home")).content.decode()
    client.force_login(people["volunteer"])
    assert link not in client.get(reverse("home")).content.decode()
    client.force_login(people["scientist"])
    assert link in client.get(reverse("home")).content.decode()


def test_the_pages_render_the_numbers_they_select(client, personas):
    wf, people = personas
    s = make_subject(wf, 1, posterior=[0.2, 0.7, 0.1], status="retired", reason="confident_consensus")
    classify(wf, s, "a:1")
    make_version(wf, 1, status="active", label_count=1, metrics={"val_accuracy": 0.75})
    make_version(wf, 2, status="training", progress=0.3, progress_detail={"phase": "training", "eta_s": 42})
    client.force_login(people["scientist"])
    home = client.get(reverse("science-home")).content.decode()
    assert f'data-workflow="{wf.id}"' in home and "elsewhere" not in home
    project = client.get(reverse("science-project", args=[wf.project.slug])).content.decode()
    assert 'class="n-retired">1<' in project and 'data-version="2" data-status="training"' in project
    assert "about 42 s left" in project and "confident_consensus" in project
    assert reverse("exports") in project and reverse("science-models", args=[wf.id]) in project
    models = client.get(reverse("science-models", args=[wf.id]))
    assert models.context["selected"].number == 1 and 'id="training-runs"' in models.content.decode()
    progress = client.get(reverse("science-models-progress", args=[wf.id])).json()
    assert progress["active"] == 1 and progress["versions"][0]["eta_s"] == 42


def test_promote_and_rollback_report_the_registrys_refusal_and_change_nothing(client, personas):
    wf, people = personas
    failed = make_version(wf, 1, status="failed")
    client.force_login(people["scientist"])
    response = client.post(reverse("science-model-promote", args=[wf.id, 1]), {"force": "1"}, follow=True)
    assert "only a trained version can be promoted" in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == "failed"
    response = client.post(reverse("science-model-rollback", args=[wf.id]), follow=True)
    assert "no active model version to roll back" in response.content.decode()


def registered(version: ModelVersion, folder) -> ModelVersion:
    """Give a version checkpoint files whose sha256 verifies, as the registry requires."""
    from mlcore.hashing import file_sha256

    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(f"weights of v{version.number}".encode())
    version.sha256 = file_sha256(folder / "model.pt")
    (folder / "meta.json").write_text(json.dumps({"sha256": version.sha256}))
    version.checkpoint_dir = str(folder)
    version.save(update_fields=["sha256", "checkpoint_dir"])
    return version


def test_a_scientist_forces_a_promotion_then_rolls_it_back_from_the_model_page(client, personas, tmp_path):
    wf, people = personas
    subject = make_subject(wf, 1, posterior=[0.2, 0.7, 0.1])
    first = registered(make_version(wf, 1, status="active"), tmp_path / "v1")
    second = registered(make_version(wf, 2, status="ready", parent=first), tmp_path / "v2")
    for version in (first, second):
        predict(version, subject, [0.3, 0.6, 0.1])
    client.force_login(people["scientist"])
    page = client.get(reverse("science-models", args=[wf.id])).content.decode()
    assert reverse("science-model-promote", args=[wf.id, 2]) in page and 'id="rollback-form"' in page

    response = client.post(reverse("science-model-promote", args=[wf.id, 2]), {"force": "1"}, follow=True)
    assert "v2: forced" in response.content.decode()
    assert dict(ModelVersion.objects.values_list("number", "status")) == {1: "retired", 2: "active"}
    response = client.post(reverse("science-model-rollback", args=[wf.id]), follow=True)
    assert "Rolled back: v1 is active again." in response.content.decode()
    assert dict(ModelVersion.objects.values_list("number", "status")) == {1: "active", 2: "retired"}
    assert "rolled_back" in response.content.decode(), "the registry history lists the rollback"


def test_the_project_page_costs_the_same_queries_whatever_the_amount_of_data(
    client, personas, django_assert_max_num_queries
):
    wf, people = personas
    client.force_login(people["scientist"])
    url = reverse("science-project", args=[wf.project.slug])
    with django_assert_max_num_queries(40) as few:
        client.get(url)
    for n in range(30):
        subject = make_subject(wf, n, posterior=[0.5, 0.3, 0.2], status="retired" if n % 3 else "active", reason="x")
        classify(wf, subject, f"a:{n % 7}", hours_ago=n)
    make_version(wf, 1, status="active")
    make_version(wf, 2, status="training", progress=0.2)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


def test_the_model_page_shows_the_metrics_of_a_really_trained_version(client, image_workflow):
    """The keys the trainer writes (curve, confusion, reliability, held-out accuracy) reach the page."""
    from labeler.classifications.services import classification_submit
    from labeler.learning import services
    from mlcore.simulate import sky
    from mlcore.tasktree import path_for_answers

    wf = image_workflow
    wf.train_min_new_labels, wf.label_min_votes, wf.retire_after = 10, 2, 10
    wf.save()
    for state in SubjectState.objects.filter(workflow=wf).select_related("subject").order_by("id")[:12]:
        truth = state.subject.truth["class"]
        path = path_for_answers(wf.task_tree, lambda task, n, t=truth: sky.CLASS_ANSWERS[t].get(task, 0))
        for v in range(2):
            classification_submit(
                workflow=wf, subject_id=state.subject_id, volunteer_key=f"a:{v}", annotation=path,
                client_uuid=uuid.uuid4(),
            )  # fmt: skip
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get(workflow=wf).id)
    services.model_version_train(model_version=version)
    client.force_login(User.objects.create_user("boss", is_staff=True))
    response = client.get(reverse("science-models", args=[wf.id]))
    plots = response.context["plots"]
    assert plots["learning_curve"] and plots["learning_curve"][0]["label_count"] == version.label_count
    assert plots["epochs"] and plots["epochs"][0]["train_loss"] is not None
    n_answers = len(wf.task_tree["tasks"][wf.task_tree["first"]]["answers"])
    assert plots["confusion"] and len(plots["confusion"]["matrix"]) == n_answers
    assert plots["reliability"] and len(plots["reliability"]["confidence"]) == len(plots["reliability"]["count"])
    assert response.context["selected"].number == version.number and response.context["metrics"]
