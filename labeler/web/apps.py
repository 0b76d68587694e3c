from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "labeler.web"
    label = "web"
