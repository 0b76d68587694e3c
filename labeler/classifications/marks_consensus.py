"""Consensus of drawn marks: the clustering lives in ``mlcore.marks``; this module reads the rows."""

from __future__ import annotations

from labeler.classifications.models import Classification, Consensus
from labeler.workflows.models import Workflow
from mlcore import marks


def consensus_marks_refresh(consensus: Consensus, *, workflow: Workflow | None = None) -> None:
    """Recompute ``consensus.marks`` from all the subject's classifications in its workflow (caller saves).

    ``workflow`` saves a query when the caller already has it. A workflow without drawing
    tools has no marks consensus (``{}``).
    """
    workflow = workflow or consensus.workflow
    spec = workflow.task_tree.get("marks")
    if not spec:
        consensus.marks = {}
        return
    rows = (
        Classification.objects.filter(workflow=workflow, subject_id=consensus.subject_id)
        .order_by("id")
        .values_list("volunteer_key", "marks")
    )
    consensus.marks = marks.consensus_marks(spec, [(key, drawn or []) for key, drawn in rows])
