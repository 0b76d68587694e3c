from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "labeler.learning"
    label = "learning"

    def ready(self) -> None:
        from labeler.celery import ensure_queue_dirs

        ensure_queue_dirs()
