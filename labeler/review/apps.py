from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "labeler.review"
    label = "review"
    verbose_name = "Expert review"
