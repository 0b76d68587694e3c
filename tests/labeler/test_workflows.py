import copy

import pytest
from django.core.exceptions import ValidationError

from labeler.workflows.services import workflow_create, workflow_update_tree


def test_changing_the_task_tree_bumps_the_version_and_keeps_it_valid(image_workflow):
    tree = copy.deepcopy(image_workflow.task_tree)
    tree["tasks"]["T4"]["question"] = "Anything odd?"
    workflow_update_tree(workflow=image_workflow, task_tree=tree)
    assert image_workflow.version == 2
    workflow_update_tree(workflow=image_workflow, task_tree=tree)
    assert image_workflow.version == 2  # no change, no new version


@pytest.mark.parametrize(
    "tree",
    [
        {"first": "A", "tasks": {"A": {"question": "q", "answers": [{"label": "x", "next": "A"}, {"label": "y"}]}}},
        {"first": "A", "tasks": {"A": {"question": "q", "answers": [{"label": "only one"}]}}},
        {"first": "B", "tasks": {}},
    ],
)
def test_a_cyclic_or_malformed_tree_is_refused(small_sky, tree):
    with pytest.raises(ValidationError):
        workflow_create(project=small_sky, slug="bad", name="Bad", kind="image", task_tree=tree)
