from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "labeler.api"
    label = "api"
