from django.core.exceptions import ValidationError
from django.db import models

from labeler.subjects.models import Project, Subject
from mlcore import tasktree


def validate_task_tree(value) -> None:
    try:
        tasktree.validate_tree(value)
    except tasktree.TaskTreeError as exc:
        raise ValidationError(str(exc)) from exc


class Workflow(models.Model):
    """What volunteers are asked about one kind of subject, and how the loop runs for it."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Image questions"
        SPECTRUM = "spectrum", "Spectrum questions"
        FIELD = "field", "Survey fields: draw boxes and trails"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workflows")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    task_tree = models.JSONField(validators=[validate_task_tree])
    version = models.PositiveIntegerField(default=1, help_text="Bumped whenever the task tree changes.")
    active = models.BooleanField(default=True)
    tutorial = models.TextField(blank=True, help_text="Markdown shown to a volunteer before their first subject.")
    field_guide = models.TextField(blank=True, help_text="Markdown reference volunteers can open at any time.")
    # Retirement: at most ``retire_after`` classifications; earlier once at least ``retire_min``
    # votes give the first question a skill-weighted posterior >= ``retire_posterior``.
    retire_after = models.PositiveIntegerField(default=5)
    retire_min = models.PositiveIntegerField(default=3)
    retire_posterior = models.FloatField(default=0.95, help_text="1 disables confident early retirement.")
    retire_flags = models.PositiveIntegerField(default=3, help_text="Flags that send a subject to review (0: off).")
    retire_blank_after = models.PositiveIntegerField(
        default=3, help_text="Retire as blank when this many first votes all chose a 'blank' answer (0: off)."
    )
    # Model-crowd disagreement: a confident model that disagrees asks for more votes, then for an expert.
    review_model_confidence = models.FloatField(default=0.9)
    review_extra_votes = models.PositiveIntegerField(default=5)
    # Learning loop: train when this many subjects gained a consensus label since the last model.
    train_min_new_labels = models.PositiveIntegerField(default=40)
    label_min_votes = models.PositiveIntegerField(default=3, help_text="Votes before a subject counts as labelled.")
    mc_samples = models.PositiveIntegerField(default=15)
    random_share = models.FloatField(default=0.2, help_text="Share of subjects served at random.")
    # Gold-standard injection: a new volunteer's next subject is gold with this probability,
    # halving every ``gold_half_life`` classifications down to ``gold_share_floor``.
    gold_share_start = models.FloatField(default=0.5)
    gold_share_floor = models.FloatField(default=0.02)
    gold_half_life = models.PositiveIntegerField(default=10)
    acquisition = models.CharField(
        max_length=16,
        default="bald",
        choices=[("bald", "BALD"), ("powerbald", "PowerBALD"), ("entropy", "Entropy"), ("margin", "Margin")],
    )
    # Rare-object search (Space Warps, Marshall+2016): set ``rare_answer`` to the first question's
    # answer that is a find (e.g. "yes, a lens"). Retirement then works on P(rare) with the prior
    # ``rare_prior``: "detected" at >= ``detect_posterior``, "rejected" at <= ``reject_posterior``;
    # the queue multiplies a subject's priority by 1 + ``interest_weight`` * the model's P(rare).
    rare_answer = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="First-question answer that is a rare find; empty: an ordinary workflow."
    )
    rare_prior = models.FloatField(default=0.01, help_text="Prior probability (prevalence) of the rare answer.")
    detect_posterior = models.FloatField(default=0.95, help_text="P(rare) at which a subject retires as detected.")
    reject_posterior = models.FloatField(default=0.001, help_text="P(rare) at which a subject retires as rejected.")
    interest_weight = models.FloatField(default=0.0, help_text="Queue boost for subjects the model finds likely rare.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="workflow_unique_slug"),
            models.CheckConstraint(
                condition=models.Q(random_share__gte=0) & models.Q(random_share__lte=1),
                name="workflow_random_share_in_unit_interval",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"

    def clean(self) -> None:
        super().clean()
        if self.rare_answer is None:
            return
        first = (self.task_tree or {}).get("tasks", {}).get((self.task_tree or {}).get("first"), {})
        if self.rare_answer >= len(first.get("answers", [])):
            raise ValidationError({"rare_answer": "must be one of the first question's answers (0-based)"})
        if not 0 < self.reject_posterior < self.rare_prior < self.detect_posterior < 1:
            raise ValidationError("need 0 < reject_posterior < rare_prior < detect_posterior < 1")
        if self.interest_weight < 0:
            raise ValidationError({"interest_weight": "must be >= 0"})


class SubjectState(models.Model):
    """A subject as seen by one workflow: active or retired, its queue priority, its count."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        RETIRED = "retired"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="states")
    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="states")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    classification_count = models.PositiveIntegerField(default=0)
    priority = models.FloatField(default=0.0)
    # The model version that wrote ``priority``: a late, older version never overwrites a newer one.
    priority_version = models.ForeignKey(
        "learning.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    gold_answers = models.JSONField(
        null=True, blank=True, help_text="{task: answer} known for this subject: volunteers' skill is measured on it."
    )
    flag_count = models.PositiveIntegerField(default=0)
    needs_review = models.BooleanField(
        default=False, help_text="Retired for an expert: flagged, or model and crowd disagree."
    )
    retired_at = models.DateTimeField(null=True, blank=True)
    retirement_reason = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "subject"], name="state_unique_workflow_subject"),
        ]
        indexes = [models.Index(fields=["workflow", "status", "-priority"], name="state_queue_idx")]

    def __str__(self) -> str:
        return f"subject {self.subject_id} in workflow {self.workflow_id}: {self.status}"
