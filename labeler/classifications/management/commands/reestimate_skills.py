from django.core.management.base import BaseCommand

from labeler.classifications.skill import skills_reestimate
from labeler.workflows.lookup import workflow_from_identifier


class Command(BaseCommand):
    help = "Re-estimate every volunteer's skill and every posterior with a full Dawid-Skene EM."

    def add_arguments(self, parser):
        parser.add_argument("workflow", help="workflow id, slug or project/slug")

    def handle(self, *args, workflow, **options):
        wf = workflow_from_identifier(workflow)
        iterations = skills_reestimate(workflow=wf)
        self.stdout.write(self.style.SUCCESS(f"re-estimated skills of {wf}: EM iterations per question {iterations}"))
