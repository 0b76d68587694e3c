from django.urls import path

from labeler.review import candidates, views

urlpatterns = [
    path("workflows/<int:workflow_id>/review/", views.review_page, name="science-review"),
    path("workflows/<int:workflow_id>/subjects/<int:subject_id>/", views.subject_page, name="science-subject"),
    path(
        "workflows/<int:workflow_id>/subjects/<int:subject_id>/label/",
        views.expert_label_page,
        name="science-expert-label",
    ),
    path("workflows/<int:workflow_id>/candidates/", candidates.candidates_page, name="science-candidates"),
    path(
        "workflows/<int:workflow_id>/candidates/<int:subject_id>/grade/",
        candidates.candidate_grade,
        name="science-candidate-grade",
    ),
]
