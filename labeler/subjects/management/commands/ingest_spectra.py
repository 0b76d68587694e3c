from labeler.subjects.management.ingest import IngestCommand
from labeler.subjects.models import Subject


class Command(IngestCommand):
    help = "Ingest FITS spectra (SDSS-style and other formats specutils reads). All files or none."
    kind = Subject.Kind.SPECTRUM
    noun = "spectra"
