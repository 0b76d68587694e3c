"""An anonymous volunteer who signs up or logs in keeps what they did in this browser.

Their browser session's key ``a:<uuid>`` becomes the account's ``u:<user id>``:

- classifications move to the account, except those of a subject the account already
  classified in the same workflow (one volunteer, one vote per subject): those stay under
  the anonymous key, so consensus is untouched and nothing is lost;
- skill evidence (``VolunteerSkill``) moves too; where the account already has a row for
  the same question, the two count matrices and gold tallies are added, as both are
  evidence about the same person.

Consensus posteriors are not recomputed here: the votes and the evidence behind them are
the same, only their owner's name changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db import transaction

from labeler.classifications.models import Classification, VolunteerSkill


@dataclass(frozen=True)
class AdoptResult:
    moved: int  # classifications now under the account
    kept_apart: int  # left under the anonymous key: the account had classified those subjects
    skills_merged: int  # VolunteerSkill rows moved or added into the account's


def volunteer_adopt_anonymous(*, anonymous_key: str, user) -> AdoptResult:
    """Move ``anonymous_key``'s classifications and skill to ``user``'s key (idempotent)."""
    if not anonymous_key.startswith("a:"):
        raise ValueError(f"not an anonymous volunteer key: {anonymous_key!r}")
    account_key = f"u:{user.pk}"
    with transaction.atomic():
        theirs = Classification.objects.select_for_update().filter(volunteer_key=anonymous_key)
        taken = set(Classification.objects.filter(volunteer_key=account_key).values_list("workflow_id", "subject_id"))
        rows = list(theirs.values_list("id", "workflow_id", "subject_id"))
        movable = [pk for pk, workflow_id, subject_id in rows if (workflow_id, subject_id) not in taken]
        moved = Classification.objects.filter(pk__in=movable).update(volunteer_key=account_key, user=user)
        skills = _merge_skills(anonymous_key, account_key)
    return AdoptResult(moved=moved, kept_apart=len(rows) - len(movable), skills_merged=skills)


def _merge_skills(anonymous_key: str, account_key: str) -> int:
    """Inside a transaction: the anonymous rows join the account's, summed where both exist."""
    anonymous = list(VolunteerSkill.objects.select_for_update().filter(volunteer_key=anonymous_key).order_by("id"))
    if not anonymous:
        return 0
    existing = {
        (row.workflow_id, row.task): row
        for row in VolunteerSkill.objects.select_for_update().filter(volunteer_key=account_key).order_by("id")
    }
    renamed, summed, absorbed = [], [], []
    for row in anonymous:
        mine = existing.get((row.workflow_id, row.task))
        if mine is None:
            row.volunteer_key = account_key
            renamed.append(row)
            continue
        absorbed.append(row.pk)
        theirs, ours = np.asarray(row.counts, dtype=float), np.asarray(mine.counts, dtype=float)
        if theirs.shape == ours.shape:  # differs only if the question's answers were changed since
            mine.counts = (ours + theirs).tolist()
            mine.n_gold += row.n_gold
            summed.append(mine)
    VolunteerSkill.objects.filter(pk__in=absorbed).delete()
    VolunteerSkill.objects.bulk_update(renamed, ["volunteer_key"])
    VolunteerSkill.objects.bulk_update(summed, ["counts", "n_gold"])
    return len(anonymous)
