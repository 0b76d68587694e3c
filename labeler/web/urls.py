from django.urls import path

from labeler.web import accounts, views

urlpatterns = [
    path("", views.home, name="home"),
    path("classify/<int:workflow_id>/", views.classify, name="classify"),
    path("workflows/<int:workflow_id>/volunteers/", views.workflow_volunteers, name="workflow-volunteers"),
    path("subjects/<int:subject_id>/preview-<str:checksum>.png", views.subject_preview, name="subject-preview"),
    path("subjects/<int:subject_id>/data-<str:checksum>", views.subject_data, name="subject-data"),
    path("me/", views.me, name="me"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/login/", accounts.SkyloopLoginView.as_view(), name="login"),
    path("accounts/logout/", accounts.SkyloopLogoutView.as_view(), name="logout"),
]
