from django.apps import AppConfig


class SubjectsConfig(AppConfig):
    name = "labeler.subjects"
    label = "subjects"
