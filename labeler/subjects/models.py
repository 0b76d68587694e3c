from django.db import models


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Subject(models.Model):
    """One object shown to volunteers: an image cutout (B, H, W) or a 1-D spectrum.

    The data lives in a FITS file under MEDIA_ROOT (``data_file``); ``truth`` is known only
    for simulated or gold subjects and is never sent to volunteers.
    """

    class Kind(models.TextChoices):
        IMAGE = "image", "Image cutout"
        SPECTRUM = "spectrum", "Spectrum"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="subjects")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    external_id = models.CharField(max_length=200, help_text="Name in the source survey or file.")
    data_file = models.CharField(max_length=400, help_text="Path under MEDIA_ROOT.")
    data_sha256 = models.CharField(max_length=64)
    ra = models.FloatField(null=True, blank=True, help_text="degrees (ICRS)")
    dec = models.FloatField(null=True, blank=True, help_text="degrees (ICRS)")
    metadata = models.JSONField(default=dict, blank=True)
    truth = models.JSONField(null=True, blank=True, help_text="Hidden from volunteers.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="subject_unique_external_id"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_id}"


class SubjectEmbedding(models.Model):
    """Backbone features cached per subject, so retraining a head never re-runs the CNN."""

    subject = models.ForeignKey(Subject, on_delete=models.CASCADE, related_name="embeddings")
    backbone = models.CharField(max_length=100)
    vector = models.BinaryField(help_text="float32 little-endian")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "backbone"], name="embedding_unique_backbone"),
        ]

    def __str__(self) -> str:
        return f"{self.backbone} of subject {self.subject_id}"


class ProjectMembership(models.Model):
    """A person's role in one project. Admins (``is_staff``) need no membership."""

    class Role(models.TextChoices):
        SCIENTIST = "scientist", "project scientist"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="project_memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.SCIENTIST)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_project_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.role} of {self.project}"
