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
