from django.conf import settings
from django.db import models

from labeler.subjects.models import Subject
from labeler.workflows.models import Workflow


class ModelVersion(models.Model):
    """One trained model of a workflow: checkpoint + meta.json on disk, metrics here."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        TRAINING = "training"
        EVALUATING = "evaluating"
        READY = "ready"
        ACTIVE = "active"
        FAILED = "failed"
        RETIRED = "retired"

    IN_PROGRESS = (Status.QUEUED, Status.TRAINING, Status.EVALUATING)

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField(help_text="1, 2, 3... within the workflow.")
    kind = models.CharField(max_length=32, help_text="question_head | spectrum_cnn | detector")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    label_count = models.PositiveIntegerField(default=0, help_text="Labelled subjects when training was queued.")
    backbone = models.CharField(max_length=100, blank=True)
    checkpoint_dir = models.CharField(max_length=400, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    agent_confusion = models.JSONField(
        null=True, blank=True, help_text="First question: K x (K*bins) confusion measured on held-out labels."
    )
    progress = models.FloatField(default=0.0, help_text="0..1 while training and scoring")
    progress_detail = models.JSONField(
        default=dict, blank=True, help_text="{phase, epoch, epochs, step, eta_s, updated_at} of the running job."
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of its training run.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Training runs started (a killed run is resent).")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    trained_at = models.DateTimeField(null=True, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True, help_text="When its priorities went live.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="modelversion_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number} ({self.status})"


class Prediction(models.Model):
    """A model version's view of one subject: mean probabilities and uncertainty."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="predictions")
    probabilities = models.JSONField(help_text="{task: [mean probability per answer]}")
    entropy = models.FloatField(help_text="Predictive entropy of the root question (nats).")
    bald = models.FloatField(help_text="BALD mutual information summed over questions (nats).")
    score = models.FloatField(help_text="Acquisition score used for the priority.")
    in_training = models.BooleanField(default=False, help_text="The model was trained on this subject's votes.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "subject"], name="prediction_unique_version_subject"),
        ]

    def __str__(self) -> str:
        return f"v{self.model_version_id} on subject {self.subject_id}"


class EvaluationSet(models.Model):
    """The fixed held-out subjects on which a workflow's versions are compared (never trained on).

    Chosen by a seeded hash of the subject id as subjects become labelled, until it holds
    ``registry.EVAL_TARGET`` members; from then on it never changes.
    """

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="evaluation_set")
    subject_ids = models.JSONField(default=list, help_text="Sorted subject ids.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"evaluation set of {self.workflow} ({len(self.subject_ids)} subjects)"


class ModelEvent(models.Model):
    """Who promoted, refused, forced or rolled back which version, when and why."""

    class Action(models.TextChoices):
        PROMOTED = "promoted"
        REFUSED = "refused"
        FORCED = "forced"
        ROLLED_BACK = "rolled_back"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="model_events")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="events")
    previous = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The version that was active before.",
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.model_version.number} {self.action}"
