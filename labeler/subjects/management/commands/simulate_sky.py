from django.core.management.base import BaseCommand, CommandError

from labeler.subjects.simulation import LENS_PROJECT_SUFFIX, SkyPlan, sky_simulate
from labeler.workflows.models import Workflow

DEMO_FIELDS = 12  # SkyPlan's default stays small for tests
DEMO_LENS_CUTOUTS = 2000  # at 1% prevalence: ~20 lenses to find, plus ~40 training lenses


class Command(BaseCommand):
    help = (
        "Create the demo project: simulated image cutouts (GalSim), quasar spectra with DLAs, and survey fields "
        "(256x256, g/r/i) with galaxies, stars and asteroid or satellite trails to box and trace; and a second "
        "project, <project>-lenses, with a Space Warps-style search for strong gravitational lenses."
    )

    def add_arguments(self, parser):
        defaults = SkyPlan()
        parser.add_argument("--project", default=defaults.project)
        parser.add_argument("--images", type=int, default=defaults.n_images)
        parser.add_argument("--spectra", type=int, default=defaults.n_spectra)
        parser.add_argument("--fields", type=int, default=DEMO_FIELDS)
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--retire-after", type=int, default=defaults.retire_after)
        parser.add_argument("--train-min-new-labels", type=int, default=defaults.train_min_new_labels)
        parser.add_argument("--lens-cutouts", type=int, default=DEMO_LENS_CUTOUTS)
        parser.add_argument("--lens-prevalence", type=float, default=defaults.lens_prevalence)

    def handle(self, *args, **o):
        if min(o["images"], o["spectra"], o["fields"], o["lens_cutouts"]) < 0 or o["retire_after"] < 1 or (
            o["train_min_new_labels"] < 1
        ):
            raise CommandError("counts must be >= 0, --retire-after and --train-min-new-labels >= 1")
        if not 0 < o["lens_prevalence"] < 1:
            raise CommandError("--lens-prevalence must be between 0 and 1 (e.g. 0.01)")
        plan = SkyPlan(
            project=o["project"],
            n_images=o["images"],
            n_spectra=o["spectra"],
            n_fields=o["fields"],
            seed=o["seed"],
            retire_after=o["retire_after"],
            train_min_new_labels=o["train_min_new_labels"],
            n_lens_cutouts=o["lens_cutouts"],
            lens_prevalence=o["lens_prevalence"],
        )

        def progress(what: str, done: int, total: int) -> None:
            self.stdout.write(f"\r  {what}: {done}/{total}", ending="\n" if done == total else "")
            self.stdout.flush()

        project = sky_simulate(plan=plan, progress=progress)
        workflows = Workflow.objects.filter(project__slug__in=[project.slug, project.slug + LENS_PROJECT_SUFFIX])
        for workflow in workflows.select_related("project").order_by("id"):
            self.stdout.write(f"workflow {workflow.id}: {workflow} ({workflow.states.count()} subjects)")
        self.stdout.write(self.style.SUCCESS(f"project {project.slug!r} ready"))
