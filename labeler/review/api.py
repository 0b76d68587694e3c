"""DRF endpoint of expert labels: a project scientist (or an admin) settles a subject."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeler.classifications.models import Consensus
from labeler.review.models import ExpertLabel
from labeler.review.services import MAX_NOTE, expert_label_create
from labeler.roles import IsScientist, require_scientist_of
from labeler.workflows.models import Workflow


class ExpertLabelInput(serializers.Serializer):
    annotation = serializers.JSONField(help_text="Path from the first question: [{task, answer}, ...]; may stop early.")
    marks = serializers.JSONField(required=False, default=list, help_text="Marks, as for a classification.")
    grade = serializers.ChoiceField(choices=["", *ExpertLabel.Grade.values], required=False, default="",
                                    allow_blank=True)  # fmt: skip
    note = serializers.CharField(required=False, default="", allow_blank=True, max_length=MAX_NOTE)


class ExpertLabelOutput(serializers.ModelSerializer):
    user = serializers.CharField(source="user.get_username")
    posterior = serializers.SerializerMethodField(help_text="The subject's consensus posterior after the label.")

    class Meta:
        model = ExpertLabel
        fields = [
            "id", "workflow", "subject", "user", "annotation", "marks", "grade", "note", "created_at", "posterior",
        ]  # fmt: skip

    def get_posterior(self, label: ExpertLabel) -> dict:
        row = Consensus.objects.filter(workflow_id=label.workflow_id, subject_id=label.subject_id).first()
        return row.posterior if row else {}


class ExpertLabelCreateApi(APIView):
    permission_classes = [IsScientist]

    @extend_schema(
        request=ExpertLabelInput,
        responses={201: ExpertLabelOutput},
        summary="Settle a subject with an expert label (project scientists and admins)",
        description="The label becomes the subject's gold answer, retires it (reason `expert`), pins its "
        "consensus posterior and counts for training. The latest label of a subject counts.",
    )
    def post(self, request, workflow_id: int, subject_id: int):
        workflow = get_object_or_404(Workflow, pk=workflow_id)
        require_scientist_of(request.user, workflow.project_id)
        data = ExpertLabelInput(data=request.data)
        data.is_valid(raise_exception=True)
        label = expert_label_create(workflow=workflow, subject=subject_id, user=request.user, **data.validated_data)
        return Response(ExpertLabelOutput(label).data, status=status.HTTP_201_CREATED)
