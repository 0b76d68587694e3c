from django.conf import settings
from django.db import models

from labeler.subjects.models import Subject
from labeler.workflows.models import Workflow


class ExpertLabel(models.Model):
    """A scientist's verdict on one subject. The latest one per subject and workflow counts:
    it becomes the subject's gold answer and overrides the crowd in consensus and training."""

    class Grade(models.TextChoices):
        A = "A", "A: definite"
        B = "B", "B: probable"
        C = "C", "C: possible"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="expert_labels")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="expert_labels")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="expert_labels")
    annotation = models.JSONField(help_text="The path through the task tree: [{task, answer}, ...]")
    marks = models.JSONField(default=list, blank=True)
    grade = models.CharField(max_length=1, choices=Grade.choices, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workflow", "subject", "-created_at"], name="expertlabel_latest")]

    def __str__(self) -> str:
        return f"{self.user} on subject {self.subject_id} ({self.workflow})"
