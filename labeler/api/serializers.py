"""What the API shows. Subjects never expose ``truth``."""

from datetime import datetime

from django.urls import reverse
from rest_framework import serializers

from labeler.classifications import editing
from labeler.classifications.models import Classification
from labeler.learning.models import ModelVersion
from labeler.subjects.models import Subject
from labeler.subjects.pixels import data_token
from labeler.workflows.guides import render_markdown
from labeler.workflows.models import Workflow

MAX_EXCLUDE = 20
MAX_COMMENT = 2000


class SubjectOutput(serializers.ModelSerializer):
    preview_url = serializers.SerializerMethodField(help_text="PNG for the first paint (immutable, cache for a year).")
    data_url = serializers.SerializerMethodField(
        help_text="The viewer's data (immutable): images as float16 (B,H,W) with X-Skyloop-Shape/Bands/Scale "
        "headers, spectra as JSON {wavelength, flux, error, z_qso, units}; gzip when accepted."
    )

    class Meta:
        model = Subject
        fields = ["id", "kind", "external_id", "ra", "dec", "metadata", "preview_url", "data_url"]

    def get_preview_url(self, subject: Subject) -> str:
        return reverse("subject-preview", args=[subject.pk, subject.data_sha256[:12]])

    def get_data_url(self, subject: Subject) -> str:
        return reverse("subject-data", args=[subject.pk, data_token(subject)])


def subject_output(subject: Subject | None) -> dict | None:
    """``SubjectOutput(subject).data`` built directly: the submit-and-next hot path skips DRF's
    per-instance field set-up (a test keeps the two equal)."""
    if subject is None:
        return None
    return {
        "id": subject.pk,
        "kind": subject.kind,
        "external_id": subject.external_id,
        "ra": None if subject.ra is None else float(subject.ra),
        "dec": None if subject.dec is None else float(subject.dec),
        "metadata": subject.metadata,
        "preview_url": reverse("subject-preview", args=[subject.pk, subject.data_sha256[:12]]),
        "data_url": reverse("subject-data", args=[subject.pk, data_token(subject)]),
    }


class ModelVersionOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["number", "kind", "status", "label_count", "metrics", "trained_at", "scored_at", "progress"]


class WorkflowOutput(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    active_model = serializers.SerializerMethodField()
    tutorial_html = serializers.SerializerMethodField(help_text="The tutorial's Markdown as sanitised HTML.")
    field_guide_html = serializers.SerializerMethodField(help_text="The field guide's Markdown as sanitised HTML.")

    class Meta:
        model = Workflow
        fields = [
            "id",
            "project",
            "slug",
            "name",
            "kind",
            "version",
            "task_tree",
            "retire_after",
            "active_model",
            "tutorial_html",
            "field_guide_html",
        ]

    def get_tutorial_html(self, workflow: Workflow) -> str:
        return render_markdown(workflow.tutorial)

    def get_field_guide_html(self, workflow: Workflow) -> str:
        return render_markdown(workflow.field_guide)

    def get_active_model(self, workflow: Workflow) -> dict | None:
        version = workflow.model_versions.filter(status=ModelVersion.Status.ACTIVE).first()
        return ModelVersionOutput(version).data if version else None


class NextOutput(serializers.Serializer):
    subject = SubjectOutput(allow_null=True)


class NextQuery(serializers.Serializer):
    exclude = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=400,
        help_text=f"Comma-separated ids of subjects the page already holds (at most {MAX_EXCLUDE}).",
    )

    def validate_exclude(self, value: str) -> tuple[int, ...]:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) > MAX_EXCLUDE:
            raise serializers.ValidationError(f"at most {MAX_EXCLUDE} subject ids")
        if not all(p.isdigit() and p.isascii() for p in parts):
            raise serializers.ValidationError("subject ids must be positive integers separated by commas")
        return tuple(int(p) for p in parts)


class ClassificationInput(serializers.Serializer):
    workflow = serializers.IntegerField(min_value=1)
    subject = serializers.IntegerField(min_value=1)
    client_uuid = serializers.UUIDField()
    annotation = serializers.JSONField()
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    duration_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=86_400_000)
    flagged = serializers.BooleanField(required=False, default=False, help_text="Something is wrong with it.")
    marks = serializers.JSONField(required=False, default=list, help_text="Drawn marks (see the task tree's tools).")
    comment = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=MAX_COMMENT, help_text="'Interesting, discuss' note."
    )
    favourite = serializers.BooleanField(required=False, default=False)


class ClassificationEditInput(serializers.Serializer):
    """Only the fields sent change; at least one is needed."""

    annotation = serializers.JSONField(required=False)
    marks = serializers.JSONField(required=False)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=MAX_COMMENT)
    favourite = serializers.BooleanField(required=False)
    flagged = serializers.BooleanField(required=False)

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError(f"send at least one of {sorted(self.fields)}")
        return attrs


class MineQuery(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)


class MyClassificationOutput(serializers.ModelSerializer):
    subject = SubjectOutput()
    editable = serializers.SerializerMethodField(
        help_text="Answers and marks can still be changed, and the classification withdrawn."
    )
    editable_until = serializers.SerializerMethodField()

    class Meta:
        model = Classification
        fields = [
            "client_uuid",
            "subject",
            "annotation",
            "marks",
            "comment",
            "favourite",
            "flagged",
            "created_at",
            "edited_at",
            "editable",
            "editable_until",
        ]

    def get_editable(self, classification: Classification) -> bool:
        return editing.answers_editable(classification)

    def get_editable_until(self, classification: Classification) -> datetime:
        return classification.created_at + editing.EDIT_WINDOW


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
