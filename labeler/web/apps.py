from pathlib import Path

from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "labeler.web"
    label = "web"

    def ready(self) -> None:
        from django.conf import settings

        # Served by WhiteNoise / written by services: they must exist before the first request.
        for folder in (settings.STATIC_ROOT, settings.MEDIA_ROOT):
            Path(folder).mkdir(parents=True, exist_ok=True)
