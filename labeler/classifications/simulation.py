"""Simulated volunteers classifying through the same service the API uses."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import numpy as np

from labeler.classifications.selectors import subject_next_for
from labeler.classifications.services import ClassificationError, classification_submit
from labeler.subjects.simulation import SIMULATED_ANSWERS, SIMULATED_TREES
from labeler.workflows.models import Workflow
from mlcore.simulate.lens_crowd import lens_vote
from mlcore.simulate.lenses import LENS_TREE
from mlcore.simulate.volunteers import make_crowd, simulated_annotation


class SimulationError(Exception):
    pass


@dataclass
class SimulationReport:
    submitted: int = 0
    exhausted_volunteers: int = 0
    by_kind: dict = field(default_factory=dict)


def volunteers_simulate(
    *, workflow: Workflow, n_volunteers: int, n_classifications: int, seed: int = 0, progress=None
) -> SimulationReport:
    """Let a simulated crowd submit up to ``n_classifications`` (fewer if the pool runs dry)."""
    lens_search = workflow.task_tree == LENS_TREE
    if not lens_search and workflow.task_tree != SIMULATED_TREES.get(workflow.kind):
        raise SimulationError(f"workflow {workflow} does not use the simulated sky's questions")
    class_answers = None if lens_search else SIMULATED_ANSWERS[workflow.kind]
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    crowd = make_crowd(n_volunteers, rng)
    active = list(range(len(crowd)))
    report = SimulationReport()
    while report.submitted < n_classifications and active:
        index = pick.choice(active)
        volunteer = crowd[index]
        key = f"sim:{seed}:{volunteer.name}"
        subject = subject_next_for(workflow=workflow, volunteer_key=key, rng=pick)
        if subject is None:
            active.remove(index)
            report.exhausted_volunteers += 1
            continue
        if not subject.truth:
            raise SimulationError(f"subject {subject.external_id} has no truth to simulate answers from")
        if lens_search:
            annotation = [{"task": LENS_TREE["first"], "answer": lens_vote(volunteer, subject.truth, rng.random())}]
        else:
            annotation = simulated_annotation(
                volunteer, workflow.task_tree, class_answers, subject.truth["class"], subject.truth["difficulty"], rng
            )
        try:
            classification_submit(
                workflow=workflow,
                subject_id=subject.id,
                volunteer_key=key,
                annotation=annotation,
                client_uuid=uuid.uuid4(),
                duration_ms=int(rng.gamma(4.0, 1500.0)),
                user_agent="skyloop-simulated-volunteer",
            )
        except ClassificationError:
            continue
        report.submitted += 1
        report.by_kind[volunteer.kind] = report.by_kind.get(volunteer.kind, 0) + 1
        if progress and report.submitted % 50 == 0:
            progress(report.submitted, n_classifications)
    return report
