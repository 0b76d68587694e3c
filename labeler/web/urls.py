from django.urls import path

from labeler.web import views

urlpatterns = [
    path("", views.home, name="home"),
    path("classify/<int:workflow_id>/", views.classify, name="classify"),
    path("workflows/<int:workflow_id>/volunteers/", views.workflow_volunteers, name="workflow-volunteers"),
    path("subjects/<int:subject_id>/preview-<str:checksum>.png", views.subject_preview, name="subject-preview"),
]
