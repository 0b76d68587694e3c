from django.urls import path

from labeler.dashboard import views

urlpatterns = [
    path("", views.science_home, name="science-home"),
    path("projects/<slug:slug>/", views.project_page, name="science-project"),
    path("workflows/<int:workflow_id>/consensus/", views.consensus_page, name="science-consensus"),
    path("workflows/<int:workflow_id>/models/", views.models_page, name="science-models"),
    path("workflows/<int:workflow_id>/models/progress.json", views.models_progress, name="science-models-progress"),
    path("workflows/<int:workflow_id>/models/<int:number>/promote/", views.model_promote, name="science-model-promote"),
    path("workflows/<int:workflow_id>/models/rollback/", views.model_rollback, name="science-model-rollback"),
]
