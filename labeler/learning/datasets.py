"""Turning a workflow's subjects and votes into arrays for mlcore.

Images: EfficientNet-Lite0 embeddings, computed once per subject and cached in the
database (SubjectEmbedding), so a retrain only fits the small head. Spectra: the
Parks+2018-style rest-frame window, recomputed from the stored FITS (cheap).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from django.conf import settings

from labeler.classifications.models import Consensus
from labeler.review.selectors import expert_training_counts
from labeler.subjects import storage
from labeler.subjects.models import Subject, SubjectEmbedding
from labeler.subjects.services import subject_load_spectrum
from labeler.workflows.models import Workflow
from mlcore.inference import embed_fits_files
from mlcore.io import DataFileError
from mlcore.models.image import BackboneConfig, ImageBackbone, QuestionHead, native_bf16
from mlcore.models.spectrum import SpectrumCNN, SpectrumInputConfig, preprocess_spectrum

EMBED_BATCH = 256
EMBED_CHUNK = 2048  # subjects embedded between two cache writes


def labelled_counts(workflow: Workflow, layout) -> tuple[list[int], np.ndarray]:
    """Subjects with at least ``label_min_votes`` votes, or an expert label, and their counts
    (N, A) in layout order. An expert's answer replaces the crowd's votes on the questions it covers."""
    rows = dict(
        Consensus.objects.filter(workflow=workflow, n_classifications__gte=workflow.label_min_votes).values_list(
            "subject_id", "counts"
        )
    )
    rows.update(expert_training_counts(workflow=workflow))
    subject_ids = sorted(rows)
    counts = [[c for task, n in layout for c in rows[sid].get(task, [0] * n)] for sid in subject_ids]
    return subject_ids, np.asarray(counts, dtype=np.float32).reshape(len(subject_ids), -1)


def features(workflow: Workflow, subject_ids: list[int], trained_on: str = "") -> tuple[np.ndarray, str]:
    """Model inputs for these subjects, in this order, and the name of the feature extractor.

    ``trained_on`` (a version's ``backbone``) asks for the features that version was trained
    on, whatever this worker's default arithmetic: after ``SKYLOOP_CPU_PRECISION`` changes,
    earlier versions still score on their own features. ValueError when this worker cannot
    compute them.
    """
    if workflow.kind != Workflow.Kind.IMAGE:
        return spectrum_inputs(subject_ids), "spectrum-window"
    backbone = image_backbone()
    if trained_on and trained_on != backbone.name:
        backbone = next((b for b in map(image_backbone, ("fp32", "bf16")) if b.name == trained_on), None)
        if backbone is None:
            raise ValueError(f"this worker cannot compute the {trained_on} features the model was trained on")
    return embeddings(subject_ids, backbone), backbone.name


def image_backbone(precision: str = "") -> ImageBackbone:
    """The image backbone in ``precision`` (default ``SKYLOOP_CPU_PRECISION``), one per process."""
    return _backbone(_resolved_precision(precision or settings.SKYLOOP_CPU_PRECISION))


def _resolved_precision(precision: str) -> str:
    """"auto" as this CPU resolves it, so "auto" and what it means share one backbone."""
    return ("bf16" if native_bf16() else "fp32") if precision == "auto" else precision


@lru_cache(maxsize=2)
def _backbone(precision: str) -> ImageBackbone:
    return ImageBackbone(BackboneConfig(cpu_precision=precision))  # loading the weights takes ~1 s


def embeddings(subject_ids: list[int], backbone: ImageBackbone) -> np.ndarray:
    """(N, D) float32 embeddings, computing and caching the missing ones.

    Missing ones stream from their FITS files through ``mlcore.inference.embed_fits_files``
    (reader threads ahead of the backbone), EMBED_CHUNK at a time, each chunk cached in one
    bulk insert. Stored files are named by content, so subjects may share one: it is read once.
    """
    cached = dict(
        SubjectEmbedding.objects.filter(subject_id__in=subject_ids, backbone=backbone.name).values_list(
            "subject_id", "vector"
        )
    )
    missing = [sid for sid in subject_ids if sid not in cached]
    for start in range(0, len(missing), EMBED_CHUNK):
        chunk = missing[start : start + EMBED_CHUNK]
        files = {sid: str(storage.media_path(name)) for sid, name in
                 Subject.objects.filter(pk__in=chunk).values_list("pk", "data_file")}
        done, vectors, failed = embed_fits_files(list(dict.fromkeys(files.values())), backbone, EMBED_BATCH)
        if failed:  # as subject_load_image would: the training run fails with the reason
            raise DataFileError(f"{failed[0][0]}: {failed[0][1]}")
        by_file = dict(zip(done, vectors, strict=True))
        rows = [
            SubjectEmbedding(subject_id=sid, backbone=backbone.name, vector=by_file[files[sid]].astype("<f4").tobytes())
            for sid in chunk
        ]
        SubjectEmbedding.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        cached.update({row.subject_id: row.vector for row in rows})
    return np.stack([np.frombuffer(bytes(cached[sid]), dtype="<f4") for sid in subject_ids]).astype(np.float32)


def spectrum_inputs(subject_ids: list[int]) -> np.ndarray:
    """(N, 2, n_pix) float32 windows."""
    subjects = Subject.objects.in_bulk(subject_ids)
    config = SpectrumInputConfig()
    out = np.empty((len(subject_ids), 2, config.n_pix), dtype=np.float32)
    for i, sid in enumerate(subject_ids):
        spec = subject_load_spectrum(subjects[sid])
        z = spec.z if spec.z is not None else subjects[sid].metadata.get("z")
        out[i] = preprocess_spectrum(spec.wavelength, spec.flux, spec.ivar, z, config)
    return out


def new_model(workflow: Workflow, layout, input_shape: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)  # reproducible initial weights for a given version number
    if workflow.kind == Workflow.Kind.IMAGE:
        return QuestionHead(input_shape[0], layout)
    return SpectrumCNN(layout, n_pix=input_shape[-1])
