"""Thin API views: parse, call one service or selector, serialise."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeler.api import serializers as s
from labeler.api.volunteers import volunteer_key_for
from labeler.classifications.selectors import subject_next_for, volunteer_progress
from labeler.classifications.services import classification_submit
from labeler.workflows.models import Workflow


def _active_workflow(workflow_id: int) -> Workflow:
    return get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id, active=True)


class WorkflowListApi(APIView):
    @extend_schema(responses=s.WorkflowOutput(many=True))
    def get(self, request):
        workflows = Workflow.objects.filter(active=True).select_related("project").order_by("id")
        return Response(s.WorkflowOutput(workflows, many=True).data)


class WorkflowDetailApi(APIView):
    @extend_schema(responses=s.WorkflowOutput)
    def get(self, request, workflow_id: int):
        return Response(s.WorkflowOutput(_active_workflow(workflow_id)).data)


class SubjectNextApi(APIView):
    @extend_schema(responses=s.NextOutput, summary="The next subject for this volunteer (null when none is left)")
    def get(self, request, workflow_id: int):
        workflow = _active_workflow(workflow_id)
        subject = subject_next_for(workflow=workflow, volunteer_key=volunteer_key_for(request))
        return Response(s.NextOutput({"subject": subject}).data)


class ClassificationCreateApi(APIView):
    @extend_schema(
        request=s.ClassificationInput,
        responses={201: s.ClassificationOutput, 200: s.ClassificationOutput},
        summary="Submit a classification; the response carries the next subject",
    )
    def post(self, request):
        data = s.ClassificationInput(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = _active_workflow(data.validated_data["workflow"])
        volunteer_key = volunteer_key_for(request)
        result = classification_submit(
            workflow=workflow,
            subject_id=data.validated_data["subject"],
            volunteer_key=volunteer_key,
            annotation=data.validated_data["annotation"],
            client_uuid=data.validated_data["client_uuid"],
            user=request.user if request.user.is_authenticated else None,
            started_at=data.validated_data.get("started_at"),
            duration_ms=data.validated_data.get("duration_ms"),
            user_agent=request.headers.get("User-Agent", ""),
            flagged=data.validated_data["flagged"],
        )
        following = subject_next_for(workflow=workflow, volunteer_key=volunteer_key)
        body = {
            "classification": {
                "id": result.classification.pk,
                "client_uuid": result.classification.client_uuid,
                "created": result.created,
            },
            "feedback": result.feedback,
            "next": following,
        }
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(s.ClassificationOutput(body).data, status=code)


class VolunteerProgressApi(APIView):
    @extend_schema(responses=s.ProgressOutput, summary="The requesting volunteer's own progress (nobody else's)")
    def get(self, request, workflow_id: int):
        workflow = _active_workflow(workflow_id)
        return Response(volunteer_progress(workflow=workflow, volunteer_key=volunteer_key_for(request)))
