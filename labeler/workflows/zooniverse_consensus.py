"""Consensus of many subjects at once, for imports: the bulk form of ``consensus_rebuild``.

``consensus_rebuild`` costs about six queries a subject (votes, skills, model, marks, save),
which for a Zooniverse history of thousands of subjects is minutes. Here one query reads
every vote of the subjects, the same pure functions (``mlcore.tasktree``, ``skill.agreement_of``,
``mlcore.marks``) count and cluster them, and the rows are written in batches. Posteriors are
left for ``skills_reestimate``, which the import runs next over the whole workflow.
"""

from __future__ import annotations

from collections import defaultdict

from django.utils import timezone

from labeler.classifications.models import Classification, Consensus
from labeler.classifications.skill import agreement_of
from labeler.workflows.models import Workflow
from mlcore import marks as marking
from mlcore import tasktree

BATCH = 2000
FIELDS = ["counts", "fractions", "n_classifications", "agreement", "marks", "posterior", "updated_at"]


def consensus_bulk_rebuild(*, workflow: Workflow, subject_ids: list[int]) -> dict[int, Consensus]:
    """Counts, fractions, agreement and marks of each subject from all its classifications; subject id -> row."""
    out: dict[int, Consensus] = {}
    for start in range(0, len(subject_ids), BATCH):
        out.update(_rebuild_batch(workflow, subject_ids[start : start + BATCH]))
    return out


def _rebuild_batch(workflow: Workflow, subject_ids: list[int]) -> dict[int, Consensus]:
    tree = workflow.task_tree
    spec = tree.get("marks")
    votes: dict[int, list[tuple[str, list, list]]] = defaultdict(list)
    rows = Classification.objects.filter(workflow=workflow, subject_id__in=subject_ids).order_by("id")
    for sid, key, path, drawn in rows.values_list("subject_id", "volunteer_key", "annotation", "marks"):
        votes[sid].append((key, path, drawn or []))
    existing = {c.subject_id: c for c in Consensus.objects.filter(workflow=workflow, subject_id__in=subject_ids)}
    new, changed, now = [], [], timezone.now()
    for sid in subject_ids:
        consensus = existing.get(sid) or Consensus(workflow=workflow, subject_id=sid)
        counts = tasktree.empty_counts(tree)
        for _, path, _ in votes[sid]:
            tasktree.add_votes(counts, [step for step in path if _fits(counts, step)])
        consensus.counts = counts
        consensus.fractions = tasktree.vote_fractions(counts)
        consensus.n_classifications = len(votes[sid])
        consensus.agreement = agreement_of(counts)
        consensus.marks = marking.consensus_marks(spec, [(key, drawn) for key, _, drawn in votes[sid]]) if spec else {}
        consensus.posterior = consensus.posterior if consensus.pk else {}
        consensus.updated_at = now  # bulk_update skips auto_now
        (changed if consensus.pk else new).append(consensus)
    Consensus.objects.bulk_create(new, batch_size=BATCH)
    Consensus.objects.bulk_update(changed, FIELDS, batch_size=BATCH)
    return {c.subject_id: c for c in new + changed}


def _fits(counts: dict[str, list[int]], step: dict) -> bool:
    """A step still fits the tree (as ``consensus_rebuild`` counts them)."""
    row = counts.get(step.get("task"))
    answer = step.get("answer")
    return row is not None and isinstance(answer, int) and 0 <= answer < len(row)
