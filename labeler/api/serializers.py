"""What the API shows. Subjects never expose ``truth``."""

from django.urls import reverse
from rest_framework import serializers

from labeler.learning.models import ModelVersion
from labeler.subjects.models import Subject
from labeler.workflows.models import Workflow


class SubjectOutput(serializers.ModelSerializer):
    preview_url = serializers.SerializerMethodField()

    class Meta:
        model = Subject
        fields = ["id", "kind", "external_id", "ra", "dec", "metadata", "preview_url"]

    def get_preview_url(self, subject: Subject) -> str:
        return reverse("subject-preview", args=[subject.pk, subject.data_sha256[:12]])


class ModelVersionOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["number", "kind", "status", "label_count", "metrics", "trained_at", "scored_at", "progress"]


class WorkflowOutput(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    active_model = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = ["id", "project", "slug", "name", "kind", "version", "task_tree", "retire_after", "active_model"]

    def get_active_model(self, workflow: Workflow) -> dict | None:
        version = workflow.model_versions.filter(status=ModelVersion.Status.ACTIVE).first()
        return ModelVersionOutput(version).data if version else None


class NextOutput(serializers.Serializer):
    subject = SubjectOutput(allow_null=True)


class ClassificationInput(serializers.Serializer):
    workflow = serializers.IntegerField(min_value=1)
    subject = serializers.IntegerField(min_value=1)
    client_uuid = serializers.UUIDField()
    annotation = serializers.JSONField()
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    duration_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=86_400_000)
    flagged = serializers.BooleanField(required=False, default=False, help_text="Something is wrong with it.")


class ClassificationSaved(serializers.Serializer):
    id = serializers.IntegerField()
    client_uuid = serializers.UUIDField()
    created = serializers.BooleanField()


class ExpectedAnswer(serializers.Serializer):
    question = serializers.CharField()
    answer = serializers.CharField()


class GoldFeedback(serializers.Serializer):
    correct = serializers.BooleanField()
    expected = ExpectedAnswer(many=True)


class ClassificationOutput(serializers.Serializer):
    classification = ClassificationSaved()
    feedback = GoldFeedback(allow_null=True, help_text="Only after a gold-standard subject.")
    next = SubjectOutput(allow_null=True)


class ProgressOutput(serializers.Serializer):
    classified = serializers.IntegerField()
    gold_seen = serializers.IntegerField()
