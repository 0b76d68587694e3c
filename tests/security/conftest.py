"""Personas and a small world for the security tests: two projects, five kinds of visitor."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.test import Client

from labeler.catalogs.models import ExportJob
from labeler.catalogs.services import exports_dir
from labeler.classifications.models import Classification
from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion
from labeler.subjects.models import Project, ProjectMembership, Subject
from labeler.subjects.services import project_get_or_create
from labeler.workflows.models import Workflow

PERSONAS = ("anonymous", "volunteer", "scientist_other", "scientist", "admin")


@dataclass
class World:
    project: Project
    other_project: Project
    workflow: Workflow  # the image workflow of ``project``
    spectrum_workflow: Workflow
    subject: Subject  # an image subject of ``workflow``
    classification: Classification  # made by the volunteer persona
    job: ExportJob  # a finished export of ``workflow``
    model_version: ModelVersion  # a failed training run of ``workflow``
    users: dict[str, User | None]

    def client(self, persona: str) -> Client:
        client = Client()
        if self.users[persona] is not None:
            client.force_login(self.users[persona])
        return client


@pytest.fixture
def world(small_sky) -> World:
    other = project_get_or_create(slug="other-sky")
    users = {  # no passwords: force_login needs none, and hashing them is slow
        "anonymous": None,
        "volunteer": User.objects.create_user("vera"),
        "scientist_other": User.objects.create_user("otto"),
        "scientist": User.objects.create_user("sara"),
        "admin": User.objects.create_superuser("ada", password=None),
    }
    ProjectMembership.objects.create(project=other, user=users["scientist_other"])
    ProjectMembership.objects.create(project=small_sky, user=users["scientist"])
    workflow = small_sky.workflows.get(kind="image")
    spectra = small_sky.workflows.get(kind="spectrum")
    spectrum = spectra.states.order_by("id").first().subject
    result = classification_submit(
        workflow=spectra,
        subject_id=spectrum.pk,
        volunteer_key=f"u:{users['volunteer'].pk}",
        annotation=[{"task": "T0", "answer": 1}],
        client_uuid=uuid.uuid4(),
        user=users["volunteer"],
    )
    exports_dir().mkdir(parents=True, exist_ok=True)
    export_file = exports_dir() / f"security-{uuid.uuid4().hex[:8]}.csv"
    export_file.write_text("id\n1\n")
    job = ExportJob.objects.create(
        workflow=workflow, format="csv", status=ExportJob.Status.DONE, file_path=export_file.name, progress=1.0
    )
    version = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="failed")
    subject = workflow.states.order_by("id").first().subject
    yield World(small_sky, other, workflow, spectra, subject, result.classification, job, version, users)
    export_file.unlink(missing_ok=True)
