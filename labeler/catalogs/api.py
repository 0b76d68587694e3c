"""Export jobs over HTTP: start one, watch its progress, download its file.

Admins may export any workflow; project scientists their own projects' workflows only.
"""

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from labeler.catalogs.models import ExportJob
from labeler.catalogs.rows import CatalogFilters
from labeler.catalogs.services import FORMATS, CatalogExportError, export_job_create, export_job_file
from labeler.roles import IsScientist, require_scientist_of, scientist_project_ids
from labeler.workflows.models import Workflow


class ExportRefused(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "export_refused"
    default_detail = "this export cannot be made"


class ExportInput(serializers.Serializer):
    format = serializers.ChoiceField(choices=FORMATS)
    retired_only = serializers.BooleanField(default=False)
    min_classifications = serializers.IntegerField(default=0, min_value=0, max_value=1_000_000)


class ExportOutput(serializers.ModelSerializer):
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = [
            "id", "workflow", "workflow_name", "format", "filters", "status", "progress", "n_rows", "file_size",
            "error", "provenance", "created_at", "started_at", "finished_at", "download_url",
        ]  # fmt: skip

    def get_download_url(self, job: ExportJob) -> str | None:
        return reverse("export-download", args=[job.id]) if job.status == ExportJob.Status.DONE else None


class WorkflowExportsApi(APIView):
    permission_classes = [IsScientist]

    @extend_schema(responses=ExportOutput(many=True), summary="This workflow's export jobs, newest first")
    def get(self, request, workflow_id: int):
        workflow = get_object_or_404(Workflow, pk=workflow_id)
        require_scientist_of(request.user, workflow.project_id)
        jobs = ExportJob.objects.filter(workflow=workflow).select_related("workflow").order_by("-id")[:50]
        return Response(ExportOutput(jobs, many=True).data)

    @extend_schema(request=ExportInput, responses={202: ExportOutput}, summary="Start an asynchronous catalog export")
    def post(self, request, workflow_id: int):
        workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id)
        require_scientist_of(request.user, workflow.project_id)
        data = ExportInput(data=request.data)
        data.is_valid(raise_exception=True)
        filters = CatalogFilters(
            retired_only=data.validated_data["retired_only"],
            min_classifications=data.validated_data["min_classifications"],
        )
        try:
            job = export_job_create(workflow=workflow, fmt=data.validated_data["format"], filters=filters,
                                    user=request.user)  # fmt: skip
        except CatalogExportError as exc:
            raise ExportRefused(str(exc)) from exc
        return Response(ExportOutput(job).data, status=status.HTTP_202_ACCEPTED)


class ExportDetailApi(APIView):
    permission_classes = [IsScientist]

    @extend_schema(responses=ExportOutput, summary="An export job's status, progress and download address")
    def get(self, request, job_id: int):
        return Response(ExportOutput(_job_for(request.user, job_id)).data)


class ExportDownloadApi(APIView):
    permission_classes = [IsScientist]

    @extend_schema(responses={(200, "application/octet-stream"): bytes}, summary="The finished export's file")
    def get(self, request, job_id: int):
        path = export_job_file(_job_for(request.user, job_id))
        if path is None:
            raise NotFound("this export has no file (not finished, failed, or removed)")
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)


def _job_for(user, job_id: int) -> ExportJob:
    job = get_object_or_404(ExportJob.objects.select_related("workflow"), pk=job_id)
    require_scientist_of(user, job.workflow.project_id)
    return job


def visible_jobs(user):
    """Export jobs of the workflows this user may export (all of them for admins)."""
    allowed = scientist_project_ids(user)
    jobs = ExportJob.objects.all()
    return jobs if allowed is None else jobs.filter(workflow__project_id__in=allowed)
