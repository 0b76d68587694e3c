"""The model registry: which version of a workflow is active, and who decided it.

Lifecycle: queued -> training -> evaluating -> (active | ready) ; failed ; retired.

- A newly trained version becomes active only if it is at least as good as the active one on
  the workflow's **fixed evaluation set** (``EvaluationSet``): a seeded-hash sample of labelled
  subjects that no version trains on, grown as subjects are labelled until it holds
  ``EVAL_TARGET`` members, then frozen. Both versions are scored on the same members with the
  same metric: root-question accuracy against the gold answer (or, without gold, the crowd's
  majority), ties broken by log-loss; detectors by mAP@0.5 against consensus boxes. A refused
  version stays ``ready`` with the reason in ``metrics["promotion"]``.
- ``force=True`` (a scientist) promotes a ready or retired version anyway.
- Rollback retires the active version and re-activates the newest earlier ready/retired one
  whose checkpoint still verifies (sha256), rewriting priorities from its stored predictions.

Every decision is a ``ModelEvent`` row (who, when, why). Nothing here imports torch except the
comparison of versions, which runs where torch is (``evaluation``, imported lazily): the web
process forces a promotion or rolls back directly, reuses evaluations stored on the same
evaluation set, and otherwise hands an unforced promotion to the worker (``ComparisonQueued``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labeler.classifications import queue
from labeler.classifications.models import Consensus
from labeler.learning.models import EvaluationSet, ModelEvent, ModelVersion, Prediction
from labeler.workflows.models import SubjectState, Workflow
from mlcore.hashing import file_sha256

log = logging.getLogger(__name__)

EVAL_FRACTION = 0.2  # share of newly labelled subjects set aside until the set is full
EVAL_TARGET = 200  # members at which the set freezes (accuracy to about +-3%)
EVAL_MIN = 10  # fewer members: too noisy to refuse a model; promoted, and the reason says so
MIN_TRAINING_LEFT = 4  # never set aside so many that mlcore.train.fit has nothing to learn from
ACCURACY_TIE = 1e-9
PROMOTABLE = (ModelVersion.Status.EVALUATING, ModelVersion.Status.READY, ModelVersion.Status.RETIRED)


class RegistryError(ValueError):
    """A promotion or rollback that cannot be done; nothing was changed."""


class ComparisonQueued(RegistryError):
    """The comparison needs a model run this process cannot do; the worker was asked to promote instead."""


# ---------------------------------------------------------------- the fixed evaluation set


def is_evaluation_candidate(workflow_id: int, subject_id: int) -> bool:
    """A fixed, seeded coin per (workflow, subject): the same answer in every process, forever."""
    digest = hashlib.sha256(f"skyloop-evaluation:{workflow_id}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < EVAL_FRACTION


def evaluation_set_refresh(*, workflow: Workflow, labelled_ids: list[int]) -> list[int]:
    """Grow the workflow's evaluation set from newly labelled subjects until it is full; its ids, sorted.

    Members never leave and, once ``EVAL_TARGET`` is reached, none join: versions trained at
    any time are compared on the same subjects, none of which any of them trained on.
    """
    with transaction.atomic():
        evaluation_set, _ = EvaluationSet.objects.select_for_update().get_or_create(workflow=workflow)
        members = set(evaluation_set.subject_ids)
        room = min(EVAL_TARGET - len(members), len(set(labelled_ids) - members) - MIN_TRAINING_LEFT)
        if room > 0:
            fresh = sorted(sid for sid in set(labelled_ids) - members if is_evaluation_candidate(workflow.id, sid))[
                :room
            ]
            if fresh:
                evaluation_set.subject_ids = sorted(members | set(fresh))
                evaluation_set.save(update_fields=["subject_ids", "updated_at"])
        return list(evaluation_set.subject_ids)


def evaluation_set_sha(subject_ids: list[int]) -> str:
    """Identifies the members an evaluation was computed on (a stored result is reused only on the same set)."""
    return hashlib.sha256(json.dumps(sorted(subject_ids)).encode()).hexdigest()[:16]


def evaluation_labels(*, workflow: Workflow, subject_ids: list[int]) -> np.ndarray:
    """(N,) root-question truth per subject: the gold answer, else the crowd's majority; -1 if neither."""
    root = workflow.task_tree["first"]
    gold = dict(
        SubjectState.objects.filter(
            workflow=workflow, subject_id__in=subject_ids, gold_answers__isnull=False
        ).values_list("subject_id", "gold_answers")
    )
    counts = dict(
        Consensus.objects.filter(workflow=workflow, subject_id__in=subject_ids).values_list("subject_id", "counts")
    )
    labels = np.full(len(subject_ids), -1, dtype=np.int64)
    for i, sid in enumerate(subject_ids):
        if root in (gold.get(sid) or {}):
            labels[i] = int(gold[sid][root])
        elif sum((counts.get(sid) or {}).get(root, [])) > 0:
            labels[i] = int(np.argmax(counts[sid][root]))
    return labels


# ---------------------------------------------------------------- checks


def checkpoint_problem(version: ModelVersion) -> str | None:
    """Why this version's checkpoint cannot be trusted, or None when model.pt matches its sha256."""
    if not version.checkpoint_dir or not version.sha256:
        return "no checkpoint registered"
    directory = Path(version.checkpoint_dir)
    model_path, meta_path = directory / "model.pt", directory / "meta.json"
    if not model_path.is_file() or not meta_path.is_file():
        return f"checkpoint files missing in {directory}"
    actual = file_sha256(model_path)
    if actual != version.sha256:
        return f"model.pt sha256 {actual[:12]}... does not match the registered {version.sha256[:12]}..."
    try:
        recorded = json.loads(meta_path.read_text()).get("sha256")
    except (OSError, ValueError) as exc:
        return f"meta.json unreadable: {exc}"
    if recorded != version.sha256:
        return "meta.json records a different sha256"
    finder = (version.metrics or {}).get("dla") or {}
    if finder.get("sha256"):  # the DLA finder saved beside a spectrum model
        finder_path = Path(finder["checkpoint_dir"]) / "model.pt"
        if not finder_path.is_file() or file_sha256(finder_path) != finder["sha256"]:
            return "the DLA finder's model.pt is missing or does not match its sha256"
    return None


def _compare(candidate: ModelVersion, active: ModelVersion | None) -> tuple[bool, str, dict]:
    """Is ``candidate`` at least as good as ``active`` on the evaluation set? (accepted, reason, detail)."""
    detail: dict = {"active_version": active.number if active else None}
    if active is None:
        return True, "no active version", detail
    ids = EvaluationSet.objects.filter(workflow=candidate.workflow).values_list("subject_ids", flat=True).first()
    if len(ids or []) < EVAL_MIN:
        return True, f"evaluation set has {len(ids or [])} < {EVAL_MIN} subjects: promoted without comparison", detail
    cached = _cached_evaluations(candidate, active, ids)
    if cached is not None:
        new, old = cached
        detail.update({"candidate": new, "active": old})
        return _verdict(new, old, active, detail)
    if "torch" not in sys.modules:  # the web process never loads torch (tests/test_web_process_imports.py)
        _send_promotion_on_commit(candidate)
        raise ComparisonQueued(
            f"comparing v{candidate.number} with the active v{active.number} needs the GPU worker: queued there; "
            f"v{candidate.number} goes live if it is at least as good"
        )
    from labeler.learning import evaluation  # torch: only the worker compares

    new = evaluation.model_version_evaluation(model_version=candidate, subject_ids=ids)
    detail["candidate"] = new
    try:
        old = evaluation.model_version_evaluation(model_version=active, subject_ids=ids)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        return True, f"active v{active.number} could not be evaluated ({exc}): replaced", detail
    detail["active"] = old
    return _verdict(new, old, active, detail)


def _cached_evaluations(candidate: ModelVersion, active: ModelVersion, ids: list[int]) -> tuple[dict, dict] | None:
    """Both versions' stored evaluations when they were computed on exactly this evaluation set."""
    sha = evaluation_set_sha(ids)
    new, old = ((v.metrics or {}).get("evaluation") or {} for v in (candidate, active))
    return (new, old) if new.get("set_sha") == sha and old.get("set_sha") == sha else None


def _send_promotion_on_commit(version: ModelVersion) -> None:
    from labeler.learning.tasks import promote_model_version

    transaction.on_commit(lambda: promote_model_version.delay(version.id))


def _verdict(new: dict, old: dict, active: ModelVersion, detail: dict) -> tuple[bool, str, dict]:
    """At least as good: mAP@0.5 for detectors; root accuracy, ties broken by log-loss, for question models."""
    if "map50" in new:
        a, b = (-1.0 if x is None else x for x in (new["map50"], old.get("map50")))  # None: no boxes to find
        accepted = a >= b - ACCURACY_TIE
        return accepted, f"mAP@0.5 {a:.3f} vs {b:.3f} of v{active.number} on {new['n']} evaluation fields", detail
    if abs(new["accuracy"] - old["accuracy"]) <= ACCURACY_TIE:
        accepted = new["log_loss"] <= old["log_loss"] + ACCURACY_TIE
        why = f"accuracy tied at {new['accuracy']:.3f}; log-loss {new['log_loss']:.3f} vs {old['log_loss']:.3f}"
    else:
        accepted = new["accuracy"] > old["accuracy"]
        why = f"accuracy {new['accuracy']:.3f} vs {old['accuracy']:.3f}"
    return accepted, f"{why} of v{active.number} on {new['n']} evaluation subjects", detail


# ---------------------------------------------------------------- promotion and rollback


def _active(workflow: Workflow) -> ModelVersion | None:
    return ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.Status.ACTIVE).first()


def model_version_promote(
    *, model_version: ModelVersion, user=None, force: bool = False, reason: str = ""
) -> ModelEvent:
    """Make a trained version active if it beats (or ties) the active one, or unconditionally with ``force``.

    Refused: the version becomes ``ready`` and ``metrics["promotion"]`` says why. Raises
    RegistryError (nothing changed) for a version that is not trained, already active, has no
    predictions, or whose checkpoint fails its sha256.
    """
    version = ModelVersion.objects.select_related("workflow").get(pk=model_version.pk)
    if version.status not in PROMOTABLE:
        raise RegistryError(f"v{version.number} is {version.status}; only a trained version can be promoted")
    problem = checkpoint_problem(version)
    if problem:
        raise RegistryError(f"v{version.number} cannot be promoted: {problem}")
    if not _has_scored(version):
        raise RegistryError(f"v{version.number} has not scored the pool")
    active = _active(version.workflow)
    if force:
        who = getattr(user, "username", None) or "a scientist"
        return _switch(version, active, ModelEvent.Action.FORCED, user, reason or f"forced by {who}", {}, True)
    accepted, why, detail = _compare(version, active)
    if accepted:
        return _switch(version, active, ModelEvent.Action.PROMOTED, user, reason or why, detail, False)
    with transaction.atomic():
        version.metrics = {**version.metrics, "promotion": _decision(False, why, detail, user)}
        version.status = ModelVersion.Status.READY
        version.save(update_fields=["metrics", "status"])
        event = ModelEvent.objects.create(
            workflow=version.workflow,
            model_version=version,
            previous=active,
            action=ModelEvent.Action.REFUSED,
            user=user,
            reason=why,
            detail=detail,
        )
    log.info("v%s of %s stays ready: %s", version.number, version.workflow, why)
    return event


def model_version_rollback(*, workflow: Workflow, user=None, reason: str = "") -> ModelEvent:
    """Retire the active version and re-activate the newest earlier one whose checkpoint verifies.

    Its stored predictions become the priorities again (deliberately overriding the
    "newer version wins" rule). Raises RegistryError, changing nothing, when there is no
    active version or no earlier intact one.
    """
    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow.pk)  # one registry change per workflow at a time
        active = _active(workflow)
        if active is None:
            raise RegistryError(f"{workflow} has no active model version to roll back")
        skipped = []
        earlier = ModelVersion.objects.filter(
            workflow=workflow,
            status__in=(ModelVersion.Status.READY, ModelVersion.Status.RETIRED),
            number__lt=active.number,
        ).order_by("-number")
        for candidate in earlier:
            problem = checkpoint_problem(candidate)
            if problem is None and not _has_scored(candidate):
                problem = "no stored predictions"
            if problem:
                skipped.append({"version": candidate.number, "reason": problem})
                continue
            why = reason or f"rolled back from v{active.number}"
            return _switch(candidate, active, ModelEvent.Action.ROLLED_BACK, user, why, {"skipped": skipped}, True)
        reasons = "; ".join(f"v{s['version']}: {s['reason']}" for s in skipped) or "none exists"
        raise RegistryError(f"no earlier version of {workflow} to roll back to ({reasons})")


def _has_scored(version: ModelVersion) -> bool:
    """It stored predictions, or there is nothing left to predict."""
    if Prediction.objects.filter(model_version=version).exists():
        return True
    return not SubjectState.objects.filter(workflow=version.workflow, status=SubjectState.Status.ACTIVE).exists()


def _decision(accepted: bool, reason: str, detail: dict, user) -> dict:
    return {
        "accepted": accepted,
        "reason": reason,
        "at": timezone.now().isoformat(),
        "by": getattr(user, "username", None),
        **detail,
    }


def _switch(version, previous, action, user, reason: str, detail: dict, deliberate: bool) -> ModelEvent:
    """Activate ``version`` (retiring the active one) and make its predictions the priorities, atomically."""
    workflow = version.workflow
    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow.pk)
        ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.Status.ACTIVE).exclude(pk=version.pk).update(
            status=ModelVersion.Status.RETIRED
        )
        unscored = _priorities_from_predictions(version, deliberate)
        detail = {**detail, "subjects_without_prediction": unscored}
        version.metrics = {**version.metrics, "promotion": _decision(True, reason, detail, user)}
        version.status = ModelVersion.Status.ACTIVE
        version.scored_at = timezone.now()
        version.save(update_fields=["metrics", "status", "scored_at"])
        event = ModelEvent.objects.create(
            workflow=workflow,
            model_version=version,
            previous=previous,
            action=action,
            user=user,
            reason=reason,
            detail=detail,
        )
        transaction.on_commit(lambda: _publish_queue(workflow.id))
    log.info("v%s of %s is active (%s): %s", version.number, workflow, action, reason)
    return event


def _priorities_from_predictions(version: ModelVersion, deliberate: bool) -> int:
    """Copy the version's acquisition scores into the active subjects' priorities; returns how many had none."""
    scores = dict(Prediction.objects.filter(model_version=version).values_list("subject_id", "score"))
    active = SubjectState.objects.filter(workflow=version.workflow, status=SubjectState.Status.ACTIVE)
    return priorities_write(version, active, scores, deliberate=deliberate)


def priorities_write(version: ModelVersion, states, scores: dict[int, float], *, deliberate: bool = False) -> int:
    """Set these subject states' priorities to the version's scores; returns how many states had no score.

    Without ``deliberate`` a newer version's priorities are left alone (a late, older run
    must not overwrite them); a rollback or forced promotion overrides them on purpose.
    States with no score (ingested after the version scored) keep their priority.
    """
    rows = list(states.select_for_update().only("id", "subject_id", "priority_version_id"))
    changed, unscored = [], 0
    for state in rows:
        if state.subject_id not in scores:
            unscored += 1
        elif deliberate or state.priority_version_id is None or state.priority_version_id <= version.id:
            state.priority = scores[state.subject_id]
            state.priority_version_id = version.id
            changed.append(state)
    SubjectState.objects.bulk_update(changed, ["priority", "priority_version"], batch_size=1000)
    return unscored


def _publish_queue(workflow_id: int) -> None:
    """Rebuild the Redis queue from the database, labelled with the newest version that ever published.

    The queue refuses a label older than the one it holds; after a rollback the database holds
    an older version's priorities, so the newest label is reused for them on purpose.
    """
    if settings.SKYLOOP_QUEUE:
        newest = ModelVersion.objects.filter(workflow_id=workflow_id, scored_at__isnull=False).aggregate(m=Max("id"))
        queue.queue_publish(workflow_id=workflow_id, version=newest["m"] or 0)
