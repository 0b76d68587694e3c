"""Thin API views: parse, call one service or selector, serialise."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeler.api import serializers as s
from labeler.api.volunteers import volunteer_key_for
from labeler.classifications import editing
from labeler.classifications.mine import classifications_recent
from labeler.classifications.selectors import subject_next_for, volunteer_progress
from labeler.classifications.services import classification_submit
from labeler.workflows.models import Workflow


# Refusals of an edit or withdrawal that are not bad input (errors.py answers those with 400).
def _active_workflow(workflow_id: int, *, with_project: bool = True) -> Workflow:
    """``with_project=False`` on the hot path (submit, next), which never shows the project."""
    rows = Workflow.objects.select_related("project") if with_project else Workflow.objects
    return get_object_or_404(rows, pk=workflow_id, active=True)


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
    @extend_schema(
        parameters=[s.NextQuery],
        responses=s.NextOutput,
        summary="The next subject for this volunteer (null when none is left)",
        description="Never one this volunteer classified, nor a retired one. `exclude` lists subjects the page "
        "already prefetched, so that several calls in a row give different subjects.",
    )
    def get(self, request, workflow_id: int):
        workflow = _active_workflow(workflow_id, with_project=False)
        query = s.NextQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        subject = subject_next_for(
            workflow=workflow, volunteer_key=volunteer_key_for(request), exclude=query.validated_data["exclude"]
        )
        return Response({"subject": s.subject_output(subject)})  # the shape of s.NextOutput


class ClassificationCreateApi(APIView):
    @extend_schema(
        request=s.ClassificationInput,
        responses={201: s.ClassificationOutput, 200: s.ClassificationOutput},
        summary="Submit a classification; the response carries the next subject",
    )
    def post(self, request):
        data = s.ClassificationInput(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = _active_workflow(data.validated_data["workflow"], with_project=False)
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
            marks=data.validated_data["marks"],
            comment=data.validated_data["comment"],
            favourite=data.validated_data["favourite"],
        )
        following = subject_next_for(workflow=workflow, volunteer_key=volunteer_key)
        body = {  # the shape of s.ClassificationOutput, built directly (the hot path)
            "classification": {
                "id": result.classification.pk,
                "client_uuid": str(result.classification.client_uuid),
                "created": result.created,
            },
            "feedback": result.feedback,
            "next": s.subject_output(following),
        }
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(body, status=code)


class VolunteerProgressApi(APIView):
    @extend_schema(responses=s.ProgressOutput, summary="The requesting volunteer's own progress (nobody else's)")
    def get(self, request, workflow_id: int):
        workflow = _active_workflow(workflow_id)
        return Response(volunteer_progress(workflow=workflow, volunteer_key=volunteer_key_for(request)))


class MyClassificationsApi(APIView):
    @extend_schema(
        parameters=[s.MineQuery],
        responses=s.MyClassificationOutput(many=True),
        summary="The requesting volunteer's recent classifications in this workflow, newest first",
        description="Answers, marks and the flag can be changed (PATCH) or the classification withdrawn "
        f"(DELETE) while `editable` is true: {editing.EDIT_WINDOW.total_seconds() / 3600:.0f} hours after it "
        "was made. Comment and favourite can change at any time.",
    )
    def get(self, request, workflow_id: int):
        workflow = _active_workflow(workflow_id)
        query = s.MineQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        recent = classifications_recent(
            workflow=workflow, volunteer_key=volunteer_key_for(request), limit=query.validated_data["limit"]
        )
        return Response(s.MyClassificationOutput(recent, many=True).data)


class ClassificationDetailApi(APIView):
    """A volunteer's own classification, by the UUID their browser gave it.

    Someone else's (or an unknown) UUID is 404, never 403: existence is not revealed.
    Answers change, and the classification can be withdrawn, only within the edit window
    (409 `edit_closed` afterwards); the subject's consensus is rebuilt, a retired subject
    stays retired, and skill already learnt is kept (labeler/classifications/editing.py).
    """

    @extend_schema(
        request=s.ClassificationEditInput,
        responses={200: s.MyClassificationOutput},
        summary="Edit my classification: only the fields sent change",
    )
    def patch(self, request, client_uuid):
        data = s.ClassificationEditInput(data=request.data)
        data.is_valid(raise_exception=True)
        changed = editing.classification_edit(
            volunteer_key=volunteer_key_for(request), client_uuid=client_uuid, **data.validated_data
        )
        return Response(s.MyClassificationOutput(changed).data)

    @extend_schema(request=None, responses={204: None}, summary="Withdraw my classification")
    def delete(self, request, client_uuid):
        editing.classification_withdraw(volunteer_key=volunteer_key_for(request), client_uuid=client_uuid)
        return Response(status=status.HTTP_204_NO_CONTENT)
