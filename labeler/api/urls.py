from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from labeler.api import uploads, views
from labeler.review.api import ExpertLabelCreateApi

urlpatterns = [
    path("workflows/", views.WorkflowListApi.as_view(), name="api-workflows"),
    path("workflows/<int:workflow_id>/", views.WorkflowDetailApi.as_view(), name="api-workflow"),
    path("workflows/<int:workflow_id>/next/", views.SubjectNextApi.as_view(), name="api-next"),
    path("workflows/<int:workflow_id>/me/", views.VolunteerProgressApi.as_view(), name="api-progress"),
    path("workflows/<int:workflow_id>/mine/", views.MyClassificationsApi.as_view(), name="api-mine"),
    path("classifications/", views.ClassificationCreateApi.as_view(), name="api-classifications"),
    path("classifications/<uuid:client_uuid>/", views.ClassificationDetailApi.as_view(), name="api-classification"),
    path(
        "workflows/<int:workflow_id>/subjects/<int:subject_id>/expert-label/",
        ExpertLabelCreateApi.as_view(),
        name="api-expert-label",
    ),
    path("projects/<slug:slug>/subjects/", uploads.ProjectSubjectsUploadApi.as_view(), name="api-project-subjects"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
