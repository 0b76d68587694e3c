from django.urls import path

from labeler.catalogs import api, views

urlpatterns = [
    path("api/workflows/<int:workflow_id>/exports/", api.WorkflowExportsApi.as_view(), name="api-workflow-exports"),
    path("api/exports/<int:job_id>/", api.ExportDetailApi.as_view(), name="api-export"),
    path("api/exports/<int:job_id>/download/", api.ExportDownloadApi.as_view(), name="export-download"),
    path("exports/", views.exports_page, name="exports"),
]
