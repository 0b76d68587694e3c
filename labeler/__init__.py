"""Skyloop's Django project. Importing it loads the Celery app so tasks bind to it."""

from labeler.celery import app as celery_app

__all__ = ["celery_app"]
__version__ = "0.1.0"
