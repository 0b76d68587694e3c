import sys

from django.core.management.base import BaseCommand, CommandError

from labeler.catalogs.rows import CatalogFilters
from labeler.catalogs.services import FORMATS, CatalogExportError, catalog_export
from labeler.workflows.lookup import workflow_from_identifier
from labeler.workflows.models import Workflow


class Command(BaseCommand):
    help = (
        "Export a workflow's catalog (consensus, retirement, expert labels, model predictions, marks) with "
        "provenance. All or nothing: on any error no file is left at -o."
    )
    # The system checks load the URLconf, which imports torch through the API views: ~1 GB and
    # many seconds of start-up that an export never uses.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("workflow", nargs="?", help="workflow id or project/slug (or a slug that is unique)")
        parser.add_argument(
            "--list",
            dest="list_workflows",
            action="store_true",
            help="list the workflows, one a line: id project/slug name",
        )
        parser.add_argument("--format", choices=FORMATS, help="csv (ECSV header), fits, votable, parquet, coco")
        parser.add_argument("-o", "--output", help="file to write")
        parser.add_argument("--retired-only", action="store_true", help="only retired subjects")
        parser.add_argument("--min-classifications", type=int, default=0, help="only subjects with at least N")
        parser.add_argument("--chunk-size", type=int, help="rows read and written at a time (default: per format)")

    def handle(
        self, *args, workflow, list_workflows, format, output, retired_only, min_classifications, chunk_size, **options
    ):
        if list_workflows:
            for wf in Workflow.objects.select_related("project").order_by("id"):
                self.stdout.write(f"{wf.id} {wf.project.slug}/{wf.slug} {wf.name}")
            return
        if not workflow or not format or not output:
            raise CommandError("give WORKFLOW, --format and -o FILE (or --list)")
        if min_classifications < 0 or (chunk_size is not None and chunk_size < 1):
            raise CommandError("--min-classifications must be >= 0 and --chunk-size >= 1")
        wf = workflow_from_identifier(workflow)
        filters = CatalogFilters(retired_only=retired_only, min_classifications=min_classifications)
        interactive = sys.stderr.isatty()

        def progress(done: int, total: int) -> None:
            if interactive:
                self.stderr.write(f"\r  {done}/{total} rows", ending="")

        try:
            result = catalog_export(workflow=wf, fmt=format, out_path=output, filters=filters, progress=progress,
                                    chunk_size=chunk_size)  # fmt: skip
        except (CatalogExportError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if interactive:
            self.stderr.write("")
        self.stdout.write(self.style.SUCCESS(f"{result.n_rows} rows of {wf} written to {result.path} ({format})"))
