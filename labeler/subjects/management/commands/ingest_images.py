from labeler.subjects.management.ingest import IngestCommand
from labeler.subjects.models import Subject


class Command(IngestCommand):
    help = "Ingest FITS image cutouts (single/multi-band, WCS -> RA/Dec). All files or none."
    kind = Subject.Kind.IMAGE
    noun = "images"
