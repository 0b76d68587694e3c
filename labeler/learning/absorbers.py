"""The DLA finder in the learning loop (worker side, torch): spectrum workflows with an absorber tool.

Alongside the workflow's question model (``spectrum_cnn``, which answers "is there a DLA?" and
sets the priorities), each version trains ``mlcore.dla``'s Parks+2018-style finder on the
volunteers' consensus absorber marks (z_abs, log N_HI) and stores every active spectrum's DLA list
in its Prediction: ``probabilities["dlas"] = [{"z", "log_nhi", "confidence"}, ...]``. The finder's
checkpoint lives in the version's ``dla/`` sub-directory; its sha256 is in ``metrics["dla"]``.

Which spectra teach it: those with consensus absorbers (positives), and those whose labelling
volunteers drew no absorber at all (negatives). A spectrum where someone drew one but the crowd
did not agree is ambiguous and left out. Catalogue metrics (completeness, purity, sigma_z,
sigma(log N_HI); ``mlcore.dla.catalogue_metrics``) are measured against the consensus marks of
the fixed evaluation set's spectra, which it never trains on.
"""

from __future__ import annotations

import math
from pathlib import Path

from django.db import transaction

from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion, Prediction
from labeler.learning.progress import ProgressReporter
from labeler.subjects.models import Subject
from labeler.subjects.services import subject_load_spectrum
from labeler.workflows.models import Workflow
from mlcore.dla import DLATrainConfig, Sightline, catalogue_metrics, find_dlas_many, load_dla_finder, save_dla_finder
from mlcore.models.dla import DLA_MIN_LOG_NHI

FINDER_DIR = "dla"
DLA_EPOCHS = 10
MIN_SIGHTLINES = 4  # mlcore.dla_train needs a train and a validation split
SCORE_BATCH = 256


def absorber_tools(workflow: Workflow) -> list[int]:
    """Indexes of the workflow's absorber drawing tools (none: no finder is trained)."""
    tools = (workflow.task_tree.get("marks") or {}).get("tools", [])
    return [i for i, tool in enumerate(tools) if tool["type"] == "absorber"]


def consensus_absorbers(marks: dict, tools: list[int]) -> tuple[tuple[float, float], ...] | None:
    """The crowd's absorbers ``((z, log_nhi), ...)`` of one spectrum; None when ambiguous (drawn, not agreed)."""
    clusters = [c for i in tools for c in ((marks or {}).get(str(i)) or {}).get("clusters", [])]
    if clusters:
        return tuple(sorted((float(c["z"]), float(c["log_nhi"])) for c in clusters))
    drawn = sum(((marks or {}).get(str(i)) or {}).get("n_marks", 0) for i in tools)
    return () if drawn == 0 else None


def _sightlines(subject_ids: list[int], truths: dict[int, tuple] | None = None) -> list[Sightline]:
    subjects = Subject.objects.in_bulk(subject_ids)
    out = []
    for sid in subject_ids:
        spec = subject_load_spectrum(subjects[sid])
        z = spec.z if spec.z is not None else subjects[sid].metadata.get("z")
        if z is None:
            raise ValueError(f"spectrum {sid} has no quasar redshift: the DLA finder needs one")
        out.append(Sightline(spec.wavelength, spec.flux, spec.ivar, float(z), (truths or {}).get(sid, ())))
    return out


def _decided(workflow: Workflow, subject_ids: list[int], tools: list[int]) -> dict[int, tuple]:
    marks = dict(
        Consensus.objects.filter(workflow=workflow, subject_id__in=subject_ids).values_list("subject_id", "marks")
    )
    decided = {sid: consensus_absorbers(marks.get(sid) or {}, tools) for sid in subject_ids}
    return {sid: dlas for sid, dlas in decided.items() if dlas is not None}


def finder_train(
    *, version: ModelVersion, train_ids: list[int], held_out: list[int], reporter: ProgressReporter
) -> dict:
    """Train, evaluate and save the finder beside the version's checkpoint; returns ``metrics["dla"]``.

    Too few decided spectra, or no DLA among them, skip the finder (the reason is returned);
    the question model is unaffected.
    """
    workflow = version.workflow
    tools = absorber_tools(workflow)
    truths = _decided(workflow, train_ids, tools)
    if len(truths) < MIN_SIGHTLINES or not any(n >= DLA_MIN_LOG_NHI for d in truths.values() for _, n in d):
        return {"skipped": f"{len(truths)} spectra with agreed absorber marks (or none), no DLA among them yet"}
    from mlcore.dla import train_dla_finder

    ids = sorted(truths)
    config = DLATrainConfig(seed=version.number, epochs=DLA_EPOCHS)
    result = train_dla_finder(_sightlines(ids, truths), config, progress=reporter.epoch_callback("finder"))
    metrics = {"n_train": len(ids), **{k: v for k, v in result.metrics.items() if k.startswith("val_loss")}}
    metrics.update(_catalogue(result.model, workflow, held_out, tools))
    directory = Path(version.checkpoint_dir) / FINDER_DIR
    meta = save_dla_finder(directory, result.model.cpu(), metrics, extra={"model_version": version.number})
    return {**meta["metrics"], "sha256": meta["sha256"], "checkpoint_dir": str(directory)}


def _catalogue(model, workflow: Workflow, held_out: list[int], tools: list[int]) -> dict:
    """Completeness, purity, sigma_z, sigma(log N_HI) against the evaluation spectra's consensus marks."""
    truths = _decided(workflow, held_out, tools)
    if not truths:
        return {"heldout_n": 0}
    ids = sorted(truths)
    found = find_dlas_many(model, _sightlines(ids))
    scores = catalogue_metrics([truths[sid] for sid in ids], found)
    return {"heldout_n": len(ids), **{k: (None if math.isnan(v) else v) for k, v in scores.items()}}


def finder_attach_predictions(*, version: ModelVersion, reporter: ProgressReporter) -> int:
    """Add each scored spectrum's DLA list to the version's Predictions; returns how many got one."""
    dla = version.metrics.get("dla") or {}
    if "sha256" not in dla:
        return 0
    model, meta = load_dla_finder(dla["checkpoint_dir"])
    if meta["sha256"] != dla["sha256"]:
        raise ValueError("the DLA finder's checkpoint changed since it was registered")
    ids = list(
        Prediction.objects.filter(model_version=version).order_by("subject_id").values_list("subject_id", flat=True)
    )
    for start in range(0, len(ids), SCORE_BATCH):
        chunk = ids[start : start + SCORE_BATCH]
        found = dict(zip(chunk, find_dlas_many(model, _sightlines(chunk)), strict=True))
        rows = list(Prediction.objects.filter(model_version=version, subject_id__in=chunk))
        for row in rows:
            row.probabilities = {
                **row.probabilities,
                "dlas": [{k: round(float(v), 5) for k, v in dla.items()} for dla in found[row.subject_id]],
            }
        with transaction.atomic():
            Prediction.objects.bulk_update(rows, ["probabilities"], batch_size=1000)
        reporter.update("scoring", 1.0, step=start + len(chunk))
    return len(ids)
