"""Shared body of the ingest_images / ingest_spectra commands."""

from django.core.management.base import BaseCommand, CommandError

from labeler.subjects.models import Project
from labeler.subjects.services import IngestError, read_subject_files, subjects_create


class IngestCommand(BaseCommand):
    kind: str = ""
    noun: str = ""

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("files", nargs="+")

    def handle(self, *args, project, files, **options):
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project with slug {project!r}")
        try:
            created = subjects_create(project=found, new_subjects=read_subject_files(kind=self.kind, paths=files))
        except IngestError as exc:
            raise CommandError(f"nothing ingested: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(f"ingested {len(created)} {self.noun} into {found.slug}"))
