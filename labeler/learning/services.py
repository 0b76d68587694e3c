"""The learning loop in the worker: embed, train, register, score the pool, publish priorities.

Everything here runs in a Celery worker (``labeler.learning.tasks``) on the ``gpu`` queue and
imports torch; what the web process runs (when to train) is in ``triggers.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from labeler.classifications import queue
from labeler.learning import absorbers, datasets, evaluation, registry
from labeler.learning.models import ModelVersion, Prediction
from labeler.learning.progress import ProgressReporter
from labeler.learning.triggers import LEASE, MAX_ATTEMPTS, TRANSIENT_ERRORS, training_maybe_queue
from labeler.subjects.models import Subject, SubjectEmbedding
from labeler.workflows.models import SubjectState, Workflow
from mlcore import acquisition, batch_selection, checkpoints, tasktree
from mlcore.calibration import calibrate_probs, fit_temperature, heldout_report
from mlcore.consensus import model_confusion
from mlcore.inference import mc_head_probs
from mlcore.models.image import QuestionHead
from mlcore.predict import mc_dropout_probs, question_slice
from mlcore.train import TrainConfig, fit, split_indices

log = logging.getLogger(__name__)


def embeddings_precompute(*, subject_ids: list[int]) -> int:
    """Compute and cache missing embeddings; subjects deleted meanwhile are skipped."""
    existing = list(Subject.objects.filter(pk__in=subject_ids, kind=Subject.Kind.IMAGE).values_list("pk", flat=True))
    datasets.embeddings(existing, datasets.image_backbone())
    for workflow in Workflow.objects.filter(active=True, kind=Workflow.Kind.IMAGE, states__subject_id__in=existing[:1]):
        cold_start_prioritise(workflow=workflow)
    return len(existing)


COLD_START_BASE = 2.0  # above the random [0, 1) priorities given at ingest
COLD_START_SAMPLE = 20_000  # k-means on at most this many embeddings


def cold_start_prioritise(*, workflow: Workflow) -> int:
    """Before the first model, serve typical objects first: the embeddings' k-means representatives.

    ``train_min_new_labels`` subjects (what the first model needs) nearest the centroids of
    a k-means on the cached embeddings get priorities above the random cold-start order, so
    the first model learns from the bulk of the sky rather than from whatever came first.
    Runs once, while no model has scored the pool; returns the number prioritised.
    """
    if ModelVersion.objects.filter(workflow=workflow, scored_at__isnull=False).exists():
        return 0
    unscored = SubjectState.objects.filter(
        workflow=workflow, status=SubjectState.Status.ACTIVE, priority_version__isnull=True
    )
    if unscored.filter(priority__gte=COLD_START_BASE).exists():
        return 0  # already done
    rows = list(
        SubjectEmbedding.objects.filter(subject__states__in=unscored, backbone=datasets.image_backbone().name)
        .order_by("?")
        .values_list("subject_id", "vector")[:COLD_START_SAMPLE]
    )
    k = min(workflow.train_min_new_labels, len(rows))
    if k < 2:
        return 0
    X = np.stack([np.frombuffer(bytes(vector), dtype="<f4") for _, vector in rows])  # (N, D)
    picks = batch_selection.representative_points(X, k, seed=workflow.id)
    with transaction.atomic():
        for rank, index in enumerate(picks):  # the most typical first: k-means order is arbitrary
            unscored.filter(subject_id=rows[index][0]).update(priority=COLD_START_BASE + (k - rank) / k)
    if settings.SKYLOOP_QUEUE:
        queue.queue_publish(workflow_id=workflow.id, version=0)
    log.info("cold start of %s: %d representative subjects first", workflow, k)
    return k


def model_version_claim(*, model_version_id: int) -> ModelVersion | None:
    """Mark a queued (or orphaned) version as training; None if another run holds it or it is done.

    Each claim counts an attempt; a version whose runs keep dying (killed at the hard time
    limit, out of memory) is given up as failed after ``MAX_ATTEMPTS``.
    """
    now = timezone.now()
    claimable = Q(status=ModelVersion.Status.QUEUED) | (
        Q(status__in=ModelVersion.IN_PROGRESS) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - LEASE))
    )
    claimed = ModelVersion.objects.filter(claimable, id=model_version_id).update(
        status=ModelVersion.Status.TRAINING, started_at=now, heartbeat_at=now, progress=0.0, progress_detail={},
        attempts=F("attempts") + 1,
    )
    if claimed != 1:  # another delivery of the same task got there first, or it has finished
        return None
    version = ModelVersion.objects.select_related("workflow").get(id=model_version_id)
    if version.attempts > MAX_ATTEMPTS:
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.FAILED,
            error=f"gave up after {MAX_ATTEMPTS} attempts (each run was killed or lost before it finished)",
        )
        return None
    return version


def model_version_train(*, model_version: ModelVersion) -> ModelVersion:
    """Train and register one version, predict the pool, then let the registry decide whether it goes live.

    Only ``registry.model_version_promote`` writes priorities, so a run that dies or fails
    anywhere before leaves the active version and the queue untouched. A transient error
    (database or broker unreachable) puts the version back in the queue for the task's retry;
    any other marks it failed with the reason.
    """
    reporter = ProgressReporter(model_version, deadline_s=settings.SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S)
    try:
        if model_version.kind == "detector":
            from labeler.learning import detection

            trained_on = detection.detector_train_and_register(version=model_version, reporter=reporter)
            detection.detector_score_pool(model_version=model_version, trained_on=trained_on, reporter=reporter)
        else:
            trained_on = _train_and_register(model_version, reporter)
            model_version_score_pool(
                model_version=model_version, trained_on=trained_on, publish=False, reporter=reporter
            )
            absorbers.finder_attach_predictions(version=model_version, reporter=reporter)
        registry.model_version_promote(model_version=model_version)
        reporter.finish()
    except TRANSIENT_ERRORS:
        _requeue_quietly(model_version)
        raise
    except Exception as exc:
        ModelVersion.objects.filter(pk=model_version.pk).update(
            status=ModelVersion.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000]
        )
        raise
    # Labels that arrived while this version trained were debounced: they may already be enough.
    training_maybe_queue(workflow=model_version.workflow)
    return model_version


def _requeue_quietly(version: ModelVersion) -> None:
    """Hand the version back to the queue for a retry; if the database is what failed, the sweep does it later."""
    try:
        ModelVersion.objects.filter(pk=version.pk, status__in=ModelVersion.IN_PROGRESS).update(
            status=ModelVersion.Status.QUEUED, heartbeat_at=timezone.now()
        )
    except TRANSIENT_ERRORS as exc:
        log.warning("could not requeue v%s after a transient error: %s", version.number, exc)


def _train_and_register(version: ModelVersion, reporter: ProgressReporter) -> set[int]:
    """Fit on labelled subjects outside the evaluation set, calibrate, measure, save; returns the training ids."""
    workflow = version.workflow
    layout = tasktree.label_layout(workflow.task_tree)
    labelled_ids, all_counts = datasets.labelled_counts(workflow, layout)
    held_out = set(registry.evaluation_set_refresh(workflow=workflow, labelled_ids=labelled_ids))
    keep = np.array([sid not in held_out for sid in labelled_ids], dtype=bool)
    subject_ids = [sid for sid, k in zip(labelled_ids, keep, strict=True) if k]
    counts = all_counts[keep]
    reporter.update("preparing", 0.0, force=True)
    X, backbone = datasets.features(workflow, subject_ids)
    reporter.update("training", 0.0, force=True)
    model = datasets.new_model(workflow, layout, X.shape[1:], seed=version.number)
    config = TrainConfig(seed=version.number)
    result = fit(model, X, counts, layout, config, progress=reporter.epoch_callback())
    reporter.update("evaluating", 0.0, force=True)
    version.backbone = backbone  # question_report checks features and model agree
    metrics = {**result.metrics, **_question_metrics(result, version, X, counts, layout, config, sorted(held_out))}
    directory = Path(settings.MODEL_ROOT) / f"workflow-{workflow.id}" / f"v{version.number}"
    meta = checkpoints.save_checkpoint(
        directory,
        result.model,
        kind=version.kind,
        model_config=result.model.model_config(),
        layout=layout,
        metrics=metrics,
        extra={
            "workflow": workflow.id,
            "workflow_version": workflow.version,
            "model_version": version.number,
            "backbone": backbone,
            "label_count": len(subject_ids),
            "evaluation_subjects": len(held_out),
            "train_config": config.__dict__,
        },
    )
    version.checkpoint_dir = str(directory)
    version.sha256 = meta["sha256"]
    version.metrics = meta["metrics"]  # JSON-safe: NaN -> null
    version.agent_confusion = _agent_confusion(result.model, X, counts, layout, workflow, config).tolist()
    version.trained_at = timezone.now()
    version.status = ModelVersion.Status.EVALUATING  # scoring the pool; the registry decides what goes live
    version.save(
        update_fields=["checkpoint_dir", "sha256", "metrics", "agent_confusion", "backbone", "trained_at", "status"]
    )
    if workflow.kind == Workflow.Kind.SPECTRUM and absorbers.absorber_tools(workflow):
        reporter.update("finder", 0.0, force=True)
        finder = absorbers.finder_train(
            version=version, train_ids=subject_ids, held_out=sorted(held_out), reporter=reporter
        )
        version.metrics = {**version.metrics, "dla": finder}
        version.save(update_fields=["metrics"])
    return set(subject_ids)


def _question_metrics(result, version, X, counts, layout, config: TrainConfig, held_out: list[int]) -> dict:
    """Temperatures (fitted on the early-stopping split), then calibration and confusion on held-out subjects.

    Held out means the fixed evaluation set, never trained on nor used for early stopping or
    the temperature; while it is empty (the first few labels), the validation split stands in.
    """
    workflow = version.workflow
    _, val_idx = split_indices(len(X), config.val_fraction, config.seed)  # the split fit() held out
    temperatures = {}
    if len(val_idx):
        val_probs = mc_dropout_probs(result.model, X[val_idx], layout, n_samples=workflow.mc_samples, seed=0)
        logits = np.log(np.clip(val_probs.mean(axis=2), 1e-7, 1.0))  # (n_val, A)
        temperatures = fit_temperature(logits, counts[val_idx], layout)
    root = workflow.task_tree["first"]
    answers = [a["label"] for a in workflow.task_tree["tasks"][root]["answers"]]
    out = {
        "temperatures": temperatures,
        "curve": [
            {k: row.get(k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy")} for row in result.history
        ],
    }
    if held_out:
        report = evaluation.question_report(result.model, version, layout, held_out, temperatures)
        source = "evaluation_set"
        out["evaluation"] = {
            "set_sha": registry.evaluation_set_sha(held_out),
            **{k: report[k] for k in ("n", "accuracy", "log_loss")},
        }
    elif len(val_idx):
        probs = evaluation.root_probabilities(result.model, X[val_idx], layout, workflow, temperatures, version.number)
        truth = counts[val_idx][:, question_slice(layout, root)].argmax(1)  # the crowd's majority
        report = {"n": len(val_idx), **heldout_report(probs, truth)}
        source = "validation_split"
    else:
        return out
    out.update(
        {
            "heldout": {"source": source, "n": report["n"]},
            "reliability": report["reliability"],
            "ece": report["ece"],
            "confusion": {"labels": answers, "matrix": report["confusion"]},
            "heldout_accuracy": report["accuracy"],
        }
    )
    return out


def _agent_confusion(model, X, counts, layout, workflow: Workflow, config: TrainConfig) -> np.ndarray:
    """The model's confusion on the first question, on the held-out split, against the crowd's majority.

    The crowd's majority is the only truth there is in production; it is noisy on faint
    objects, so this under-rates the model there (the safe side for retirement).
    """
    _, val_idx = split_indices(len(X), config.val_fraction, config.seed)  # the split fit() held out
    root = question_slice(layout, workflow.task_tree["first"])
    probs = mc_dropout_probs(model, X[val_idx], layout, n_samples=workflow.mc_samples).mean(axis=2)[:, root]
    return model_confusion(probs, counts[val_idx][:, root].argmax(axis=1))


def model_version_score_pool(
    *,
    model_version: ModelVersion,
    trained_on: AbstractSet[int] = frozenset(),
    batch: int = 2048,
    interest: tuple[str, list[int]] | None = None,
    interest_weight: float = 0.0,
    publish: bool = True,
    reporter: ProgressReporter | None = None,
) -> int:
    """Predict every active subject with MC dropout and (``publish``) replace their priorities.

    The priority is ``workflow.acquisition`` ("bald", "powerbald", "entropy" or "margin";
    mlcore.acquisition.priorities), optionally boosted for likely interesting objects:
    ``interest = (task, [answers])`` and ``interest_weight`` > 0. Priorities are written only
    where no newer version has already written them, so a late run of an old version cannot
    overwrite a newer one; then the whole queue is published to Redis under this version.
    ``trained_on`` marks the predictions the model-as-voter must ignore; a re-score that
    omits it lets the model echo its training votes. Returns the number scored.

    ``publish=False`` (a new version, before the registry's decision) only stores the
    Prediction rows; ``registry.model_version_promote`` turns them into priorities. The
    version's fitted temperatures (``metrics["temperatures"]``) scale every MC sample.
    """
    workflow = model_version.workflow
    model, meta = checkpoints.load_checkpoint(model_version.checkpoint_dir)
    layout = [tuple(x) for x in meta["layout"]]
    root = workflow.task_tree["first"]
    temperatures = model_version.metrics.get("temperatures")
    reporter = reporter or ProgressReporter(model_version)
    if interest is None and workflow.rare_answer is not None:  # rare-object search: likely finds get more eyes
        interest, interest_weight = (root, [workflow.rare_answer]), workflow.interest_weight
    subject_ids = list(
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.ACTIVE)
        .order_by("id")
        .values_list("subject_id", flat=True)
    )
    for start in range(0, len(subject_ids), batch):
        chunk = subject_ids[start : start + batch]
        X, _ = datasets.features(workflow, chunk, trained_on=model_version.backbone)
        probs = _mc_probs(model, X, layout, workflow.mc_samples, seed=model_version.number)  # (N, A, S)
        if temperatures:
            probs = calibrate_probs(probs, temperatures, layout)  # (N, A, S)
        rng = np.random.default_rng([model_version.number, start])  # PowerBALD's draw, reproducible
        score = acquisition.priorities(
            probs,
            layout,
            method=workflow.acquisition,
            rng=rng,
            interest_score=_interest(probs, layout, interest),
            interest_weight=interest_weight,
        )
        _store_scores(model_version, workflow, layout, root, chunk, probs, trained_on, score, publish)
        reporter.update("scoring", (start + len(chunk)) / max(1, len(subject_ids)), step=start + len(chunk))
    if not publish:
        return len(subject_ids)
    if settings.SKYLOOP_QUEUE:  # every priority is written: the new order goes live at once
        queue.queue_publish(workflow_id=workflow.id, version=model_version.id)
    ModelVersion.objects.filter(pk=model_version.pk).update(scored_at=timezone.now(), progress=1.0)
    return len(subject_ids)


def _mc_probs(model, X: np.ndarray, layout, n_samples: int, seed: int) -> np.ndarray:
    """MC-dropout samples (N, A, S); an image head's hidden layer runs once for all samples."""
    if isinstance(model, QuestionHead):
        return mc_head_probs(model, X, layout, n_samples=n_samples, seed=seed)
    return mc_dropout_probs(model, X, layout, n_samples=n_samples, seed=seed)


def _interest(probs: np.ndarray, layout, interest: tuple[str, list[int]] | None) -> np.ndarray | None:
    """(N,) probability of the answers ``interest = (task, [answer, ...])`` marks as worth finding."""
    if interest is None:
        return None
    task, answers = interest
    return acquisition.interest(probs[:, question_slice(layout, task), :], answers)


def _store_scores(
    version, workflow, layout, root, subject_ids, probs, trained_on, score: np.ndarray, publish: bool = True
) -> None:
    """probs: (N, A, S) MC-dropout probabilities for ``subject_ids``; score: (N,) their priorities."""
    root_probs = probs[:, question_slice(layout, root), :]  # (N, C_root, S)
    entropy = acquisition.predictive_entropy(root_probs)
    bald = acquisition.tree_scores(probs, layout, method="bald")
    mean = probs.mean(axis=2)  # (N, A)
    with transaction.atomic():
        Prediction.objects.filter(model_version=version, subject_id__in=subject_ids).delete()
        Prediction.objects.bulk_create(
            [
                Prediction(
                    model_version=version,
                    subject_id=sid,
                    probabilities=_per_question(mean[i], layout),
                    entropy=float(entropy[i]),
                    bald=float(bald[i]),
                    score=float(score[i]),
                    in_training=sid in trained_on,
                )
                for i, sid in enumerate(subject_ids)
            ],
            batch_size=1000,
        )
        if publish:
            states = SubjectState.objects.filter(workflow=workflow, subject_id__in=subject_ids)
            registry.priorities_write(version, states, dict(zip(subject_ids, score.tolist(), strict=True)))


def _per_question(row: np.ndarray, layout) -> dict[str, list[float]]:
    """(A,) mean probabilities -> {task: [probability per answer]}."""
    return {task: [round(float(p), 5) for p in row[cols]] for task, cols in acquisition.layout_slices(layout)}
