from django.urls import reverse


def test_home_lists_both_workflows_and_says_no_model_yet(client, small_sky):
    page = client.get(reverse("home")).content.decode()
    assert "Galaxy morphology" in page and "Damped Lyman-alpha hunt" in page
    assert "No model yet" in page


def test_classify_page_carries_the_task_tree(client, image_workflow):
    page = client.get(reverse("classify", args=[image_workflow.id])).content.decode()
    assert 'id="task-tree"' in page and "smooth" in page.lower()


def test_previews_are_png_and_cached_for_a_long_time(client, image_workflow, spectrum_workflow):
    for workflow in (image_workflow, spectrum_workflow):
        subject = workflow.states.first().subject
        url = reverse("subject-preview", args=[subject.id, subject.data_sha256[:12]])
        response = client.get(url)
        assert response.status_code == 200
        body = b"".join(response.streaming_content)
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
        assert "immutable" in response["Cache-Control"]


def test_a_stale_preview_address_is_404(client, image_workflow):
    subject = image_workflow.states.first().subject
    assert client.get(reverse("subject-preview", args=[subject.id, "deadbeef0000"])).status_code == 404


def test_the_volunteers_page_is_for_the_projects_scientists_and_shows_each_confusion_matrix(
    client, image_workflow, django_user_model
):
    import uuid

    from labeler.classifications.services import classification_submit
    from labeler.subjects.models import ProjectMembership

    state = image_workflow.states.first()
    classification_submit(workflow=image_workflow, subject_id=state.subject_id, volunteer_key="a:alice",
                          annotation=[{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}],
                          client_uuid=uuid.uuid4())
    url = reverse("workflow-volunteers", args=[image_workflow.id])
    assert client.get(url).status_code == 302  # volunteers are sent to log in
    client.force_login(django_user_model.objects.create_user("vol", password="x"))
    assert client.get(url).status_code == 403
    scientist = django_user_model.objects.create_user("sci", password="x")
    ProjectMembership.objects.create(project=image_workflow.project, user=scientist)
    client.force_login(scientist)
    page = client.get(url).content.decode()
    assert "a:alice" in page and 'class="confusion"' in page


def test_a_volunteer_sees_only_their_own_progress(client, spectrum_workflow):
    import uuid

    state = spectrum_workflow.states.first()
    url = reverse("api-progress", args=[spectrum_workflow.id])
    assert client.get(url).json() == {"classified": 0, "gold_seen": 0}
    client.post(reverse("api-classifications"), {"workflow": spectrum_workflow.id, "subject": state.subject_id,
                "client_uuid": str(uuid.uuid4()), "annotation": [{"task": "T0", "answer": 1}]},
                content_type="application/json")
    assert client.get(url).json()["classified"] == 1
