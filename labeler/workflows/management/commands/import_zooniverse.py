from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeler.subjects.services import IngestError
from labeler.workflows.zooniverse import ZooniverseError
from labeler.workflows.zooniverse_import import zooniverse_import


class Command(BaseCommand):
    help = (
        "Import a Zooniverse (Panoptes) export: workflows, subjects and classifications, then consensus "
        "and skills. All or nothing; re-running the same export adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--classifications", required=True, type=Path, help="classification export CSV")
        parser.add_argument("--workflows", required=True, type=Path, help="workflow export CSV (every version)")
        parser.add_argument("--subjects", type=Path, help="subject export CSV (locations, retirement)")
        parser.add_argument("--media-dir", type=Path, help="local images named by subject id or location file name")
        parser.add_argument("--project", default="zooniverse", help="Skyloop project slug (created if missing)")

    def handle(self, *args, classifications, workflows, subjects, media_dir, project, **options):
        try:
            summary = zooniverse_import(
                classifications=classifications,
                workflows=workflows,
                subjects=subjects,
                project_slug=project,
                media_dir=media_dir,
            )
        except (ZooniverseError, IngestError) as exc:
            raise CommandError(f"nothing imported: {exc}") from exc
        for warning in summary.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        for reason, n in sorted(summary.skipped.items()):
            self.stderr.write(self.style.WARNING(f"skipped {n} {reason}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"imported into {summary.project}: workflows {', '.join(summary.workflows)} "
                f"({summary.workflows_created} new); {summary.subjects_created} new subjects; "
                f"{summary.classifications_created} classifications "
                f"({summary.classifications_existing} already there); "
                f"{summary.gold_subjects} gold subjects; {summary.retired} retired"
            )
        )
