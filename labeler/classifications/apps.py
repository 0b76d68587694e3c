from django.apps import AppConfig


class ClassificationsConfig(AppConfig):
    name = "labeler.classifications"
    label = "classifications"
