"""Tutorials and field guides: scientists' Markdown reaches volunteers as safe HTML."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labeler.workflows.guides import DEFAULT_GUIDES, render_markdown

HOSTILE = """\
# Trails

<script>alert("x")</script>
[click](javascript:alert(1)) <img src=x onerror="alert(2)"> <a href="https://example.org" onclick="evil()">ok</a>
<iframe src="https://example.org"></iframe>
"""


def test_markdown_becomes_html_without_anything_that_can_run():
    html = render_markdown(HOSTILE)
    assert "<h1>Trails</h1>" in html
    for bad in ("<script", 'alert("x")', "javascript:", "onerror", "onclick", "<iframe"):
        assert bad not in html
    assert 'href="https://example.org"' in html and "noopener" in html


def test_tables_and_keys_survive_sanitising():
    html = render_markdown("| Key | Action |\n| --- | --- |\n| <kbd>1</kbd> | smooth |\n")
    assert "<table>" in html and "<kbd>1</kbd>" in html


def test_empty_markdown_is_empty_html():
    assert render_markdown("  \n") == ""


@pytest.mark.parametrize("kind", ["image", "spectrum", "field"])
def test_each_kind_has_a_default_tutorial_and_field_guide(kind):
    for text in DEFAULT_GUIDES[kind].values():
        assert render_markdown(text).startswith("<h2>")


def test_the_workflow_api_and_the_classify_page_carry_the_rendered_guides(client, image_workflow):
    image_workflow.tutorial = "Press **1** for smooth.<script>x()</script>"
    image_workflow.field_guide = "## Smooth\nEven light."
    image_workflow.save(update_fields=["tutorial", "field_guide"])
    body = client.get(reverse("api-workflow", args=[image_workflow.id])).json()
    assert body["tutorial_html"] == "<p>Press <strong>1</strong> for smooth.</p>"
    assert body["field_guide_html"].startswith("<h2>Smooth</h2>")
    response = client.get(reverse("classify", args=[image_workflow.id]))
    assert response.context["tutorial_html"] == body["tutorial_html"]
    assert response.context["field_guide_html"] == body["field_guide_html"]


def test_scientists_edit_the_guides_in_the_admin(client, image_workflow, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("sci", password="x" * 12))
    page = client.get(reverse("admin:workflows_workflow_change", args=[image_workflow.id])).content.decode()
    assert 'name="tutorial"' in page and 'name="field_guide"' in page
