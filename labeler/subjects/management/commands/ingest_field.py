from django.core.management.base import CommandError

from labeler.subjects.management.ingest import IngestCommand
from labeler.subjects.models import Project
from labeler.subjects.services import IngestError, read_field_files, subjects_create
from labeler.workflows.models import Workflow
from labeler.workflows.services import FIELD_ROLE
from mlcore.detect import DetectConfig


class Command(IngestCommand):
    help = (
        "Ingest survey fields (FITS: a 2-D image, a (B, H, W) cube or one HDU per band; RA/Dec from the WCS). "
        "Each field becomes a subject of the project's field workflow, where volunteers draw boxes and trails. "
        "Sources are detected in it with photutils (sigma-clipped background, threshold in sky sigmas on the "
        "smoothed detection image summed over bands, deblended segmentation); each becomes a cutout subject of "
        "the project's image workflow, with RA/Dec from the WCS and its parent field, pixel position and segment "
        "in its metadata. All files or none: a bad file stops the batch and nothing is stored."
    )
    noun = "fields"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        defaults = DetectConfig()
        parser.add_argument("--nsigma", type=float, default=defaults.nsigma, help="detection threshold (sky sigmas)")
        parser.add_argument("--npixels", type=int, default=defaults.n_pixels, help="connected pixels per source")
        parser.add_argument("--cutout-size", type=int, default=defaults.cutout_size, help="cutout side in pixels")
        parser.add_argument("--max-sources", type=int, default=defaults.max_sources, help="per field, brightest first")

    def handle(self, *args, project, files, **o):
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project with slug {project!r}")
        if not found.workflows.filter(kind=Workflow.Kind.FIELD, active=True).exists():
            raise CommandError(f"project {project!r} has no active field workflow to put the fields in")
        if o["nsigma"] <= 0 or o["npixels"] < 1 or o["cutout_size"] < 8 or o["max_sources"] < 0:
            raise CommandError("--nsigma must be > 0, --npixels >= 1, --cutout-size >= 8, --max-sources >= 0")
        config = DetectConfig(
            nsigma=o["nsigma"], n_pixels=o["npixels"], cutout_size=o["cutout_size"], max_sources=o["max_sources"]
        )
        try:
            created = subjects_create(project=found, new_subjects=read_field_files(paths=files, config=config))
        except IngestError as exc:
            raise CommandError(f"nothing ingested: {exc}") from exc
        n_fields = sum(s.metadata.get("role") == FIELD_ROLE for s in created)
        n_cutouts = len(created) - n_fields
        self.stdout.write(
            self.style.SUCCESS(f"ingested {n_fields} fields and {n_cutouts} source cutouts into {found.slug}")
        )
        if n_cutouts and not found.workflows.filter(kind=Workflow.Kind.IMAGE, active=True).exists():
            self.stdout.write(self.style.WARNING("the project has no active image workflow: the cutouts wait for one"))
