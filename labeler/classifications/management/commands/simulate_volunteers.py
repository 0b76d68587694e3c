from django.core.management.base import BaseCommand, CommandError

from labeler.classifications.simulation import SimulationError, volunteers_simulate
from labeler.workflows.lookup import workflow_from_identifier


class Command(BaseCommand):
    help = "Simulated volunteers (skill spread, careless ones, spammers) classify a simulated workflow."

    def add_arguments(self, parser):
        parser.add_argument("workflow", help="workflow id, slug or project/slug")
        parser.add_argument("--volunteers", type=int, default=30)
        parser.add_argument("--classifications", type=int, default=500)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, workflow, volunteers, classifications, seed, **options):
        if volunteers < 1 or classifications < 1:
            raise CommandError("--volunteers and --classifications must be positive")
        wf = workflow_from_identifier(workflow)

        def progress(done: int, total: int) -> None:
            self.stdout.write(f"\r  {done}/{total} classifications", ending="")
            self.stdout.flush()

        try:
            report = volunteers_simulate(
                workflow=wf, n_volunteers=volunteers, n_classifications=classifications, seed=seed, progress=progress
            )
        except SimulationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(f"{report.submitted} classifications on {wf} by kind {report.by_kind}")
        )
        if report.exhausted_volunteers == volunteers:
            self.stdout.write("every simulated volunteer ran out of subjects")
