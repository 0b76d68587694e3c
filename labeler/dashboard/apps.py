from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "labeler.dashboard"
    label = "dashboard"
    verbose_name = "Scientist dashboard"
