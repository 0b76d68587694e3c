from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "labeler.workflows"
    label = "workflows"
