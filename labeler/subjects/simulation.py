"""The demo sky: a project with image, spectrum and survey-field workflows, simulated by mlcore.

Every subject keeps its truth (hidden from volunteers) for benchmarks and gold standard:
classes and difficulty, plus truth boxes and trail lines for fields (``mlcore.simulate.fields``)
and the DLA's z_abs and log N_HI for spectra. Fields are image subjects marked
``metadata["role"] = "field"``, so only the field workflow queues them.

A second project, ``<project>-lenses``, holds a Space Warps-style lens search
(``mlcore.simulate.lenses``): cutouts with strong lenses at ``lens_prevalence``, plus
simulated training lenses and known non-lenses shown as gold with feedback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeler.subjects.models import Project, Subject
from labeler.subjects.services import NewSubject, project_get_or_create, subjects_create
from labeler.workflows.guides import DEFAULT_GUIDES
from labeler.workflows.models import SubjectState, Workflow
from labeler.workflows.services import FIELD_ROLE, workflow_create
from mlcore import io as fitsio
from mlcore.simulate import fields, lenses, sky, spectra

IMAGE_WORKFLOW = "galaxy-morphology"
SPECTRUM_WORKFLOW = "dla-search"
FIELD_WORKFLOW = "survey-fields"
DLA_MARKS: dict = {
    "instruction": "If you see a damped Lyman-alpha absorber, click the middle of its trough, then move the "
    "column-density slider until the model's wings follow the spectrum's. Optional: drag the line list until "
    "the quasar's own Lyman-alpha peak lines up, and mark that redshift.",
    "tools": [
        {
            "type": "absorber",
            "label": "Damped Lyman-alpha absorber",
            "help": "Click the centre of a broad trough that reaches zero flux, left of the quasar's Lyman-alpha "
            "peak. A wider trough means more gas: raise log N(HI) until both wings match.",
        },
        {
            "type": "redshift",
            "label": "Quasar redshift",
            "help": "Drag the line list so that Lyman-alpha, C IV and the other lines sit on the emission peaks.",
        },
    ],
    "max_marks": 5,
}
SIMULATED_TREES = {
    Workflow.Kind.IMAGE: sky.GALAXY_TREE,
    Workflow.Kind.SPECTRUM: {**spectra.SPECTRUM_TREE, "marks": DLA_MARKS},
    Workflow.Kind.FIELD: fields.FIELD_TREE,
}
SIMULATED_ANSWERS = {
    Workflow.Kind.IMAGE: sky.CLASS_ANSWERS,
    Workflow.Kind.SPECTRUM: spectra.CLASS_ANSWERS,
    Workflow.Kind.FIELD: fields.CLASS_ANSWERS,
}
FIELD_CENTRE = (150.1, 2.2)  # deg; a COSMOS-like patch, for plausible coordinates
CHUNK = 200


@dataclass(frozen=True)
class SkyPlan:
    project: str = "demo"
    n_images: int = 600
    n_spectra: int = 300
    n_fields: int = 1  # a survey field takes ~0.3 s to draw; the demo command asks for 12
    seed: int = 0
    retire_after: int = 5
    train_min_new_labels: int = 40
    gold_fraction: float = 0.05  # subjects whose truth measures the volunteers' skill
    n_lens_cutouts: int = 0  # the lens search's survey cutouts; the demo command asks for 2000
    lens_prevalence: float = 0.01
    training_lens_fraction: float = 0.02  # extra known (simulated) lenses, as gold, per survey cutout


def sky_simulate(*, plan: SkyPlan, progress=None) -> Project:
    """Create (or extend) the demo project: workflows first, then simulated subjects."""
    project = project_get_or_create(
        slug=plan.project, name="Skyloop demo sky", description="Simulated DECaLS-like cutouts and BOSS-like quasars."
    )
    _ensure_workflows(project, plan)
    rng = np.random.default_rng(plan.seed)
    offset = project.subjects.count()
    _add_images(project, plan, rng, offset, progress)
    _add_spectra(project, plan, rng, offset, progress)
    _add_fields(project, plan, rng, offset, progress)
    if plan.n_lens_cutouts:
        lens_search_simulate(plan=plan, progress=progress)
    return project


def _ensure_workflows(project: Project, plan: SkyPlan) -> None:
    specs = [
        (IMAGE_WORKFLOW, "Galaxy morphology", Workflow.Kind.IMAGE),
        (SPECTRUM_WORKFLOW, "Damped Lyman-alpha hunt", Workflow.Kind.SPECTRUM),
        (FIELD_WORKFLOW, "Survey fields: galaxies, stars and trails", Workflow.Kind.FIELD),
    ]
    for slug, name, kind in specs:
        if not Workflow.objects.filter(project=project, slug=slug).exists():
            workflow_create(
                project=project,
                slug=slug,
                name=name,
                kind=kind,
                task_tree=SIMULATED_TREES[kind],
                tutorial=DEFAULT_GUIDES[kind]["tutorial"],
                field_guide=DEFAULT_GUIDES[kind]["field_guide"],
                retire_after=plan.retire_after,
                train_min_new_labels=plan.train_min_new_labels,
            )


def _sky_position(rng: np.random.Generator) -> tuple[float, float]:
    return FIELD_CENTRE[0] + rng.uniform(-1, 1), FIELD_CENTRE[1] + rng.uniform(-1, 1)


def _add_images(project: Project, plan: SkyPlan, rng, offset: int, progress) -> None:
    config = sky.SkyConfig()
    for start in range(0, plan.n_images, CHUNK):
        n = min(CHUNK, plan.n_images - start)
        stamps = sky.simulate_cutouts(n, seed=int(rng.integers(1 << 31)), config=config)
        batch = []
        for i, (cube, truth) in enumerate(stamps):
            ra, dec = _sky_position(rng)
            data = fitsio.ImageData(
                cube=cube, bands=tuple(config.bands), ra=ra, dec=dec, nan_fraction=0.0, header={"ORIGIN": "skyloop-sim"}
            )
            name = f"sim-img-{offset + start + i:06d}"
            batch.append(NewSubject(kind=Subject.Kind.IMAGE, external_id=name, data=data, truth=_plain(truth)))
        _mark_gold(subjects_create(project=project, new_subjects=batch), plan, rng)
        if progress:
            progress("images", start + n, plan.n_images)


def _add_spectra(project: Project, plan: SkyPlan, rng, offset: int, progress) -> None:
    for start in range(0, plan.n_spectra, CHUNK):
        n = min(CHUNK, plan.n_spectra - start)
        batch = []
        for i, (wave, flux, ivar, truth) in enumerate(spectra.simulate_spectra(n, seed=int(rng.integers(1 << 31)))):
            ra, dec = _sky_position(rng)
            data = fitsio.SpectrumData(
                wavelength=wave, flux=flux, ivar=ivar, z=float(truth["z_qso"]), ra=ra, dec=dec, meta={}
            )
            name = f"sim-qso-{offset + start + i:06d}"
            batch.append(NewSubject(kind=Subject.Kind.SPECTRUM, external_id=name, data=data, truth=_plain(truth)))
        _mark_gold(subjects_create(project=project, new_subjects=batch), plan, rng)
        if progress:
            progress("spectra", start + n, plan.n_spectra)


def _add_fields(project: Project, plan: SkyPlan, rng, offset: int, progress) -> None:
    config = fields.FieldConfig()
    for start in range(0, plan.n_fields, CHUNK):
        n = min(CHUNK, plan.n_fields - start)
        batch = []
        for i, (cube, truth) in enumerate(fields.simulate_fields(n, seed=int(rng.integers(1 << 31)), config=config)):
            ra, dec = _sky_position(rng)
            data = fitsio.ImageData(
                cube=cube, bands=tuple(config.bands), ra=ra, dec=dec, nan_fraction=0.0, header={"ORIGIN": "skyloop-sim"}
            )
            name = f"sim-field-{offset + start + i:06d}"
            batch.append(
                NewSubject(
                    kind=Subject.Kind.IMAGE,
                    external_id=name,
                    data=data,
                    truth=_plain(truth),
                    metadata={"role": FIELD_ROLE},
                )
            )
        _mark_gold(subjects_create(project=project, new_subjects=batch), plan, rng)
        if progress:
            progress("fields", start + n, plan.n_fields)


def _mark_gold(subjects: list[Subject], plan: SkyPlan, rng) -> None:
    """Use the simulation's truth as gold answers on a random share of the new subjects."""
    chosen = [s for s in subjects if rng.random() < plan.gold_fraction]
    for state in SubjectState.objects.filter(subject__in=chosen).select_related("subject", "workflow"):
        answers = SIMULATED_ANSWERS[state.workflow.kind][state.subject.truth["class"]]
        state.gold_answers = dict(answers)
        state.save(update_fields=["gold_answers"])


def _plain(truth: dict) -> dict:
    """JSON-safe copy (numpy scalars -> Python numbers)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in truth.items()}


# ---------------------------------------------------------------- the lens search

LENS_PROJECT_SUFFIX = "-lenses"
LENS_WORKFLOW = "lens-search"
LENS_TUTORIAL = """A **gravitational lens** is a massive galaxy whose gravity bends the light of a galaxy far behind
it into **blue arcs, a ring or two to four blue images** around the red lens galaxy, all at about the same
distance from its centre.

Answer *Yes, a lens* if you see such arcs or images, even faint ones; *No lens* otherwise. If you can, trace
each arc with a line. Lenses are rare (about one cutout in a hundred here), so most answers are "no".
Some cutouts are simulated training lenses: after those we tell you whether you were right."""
LENS_GUIDE = """**Lens**: blue arcs or images curving around a red galaxy, at 0.5-2 arcsec (2-8 pixels) from its centre.

**Not a lens**: a blue ring of star formation around a galaxy (usually lumpy and far out), spiral arms
(they wind outwards from the centre), a small blue galaxy beside a red one (straight, not curved around it),
tidal tails of merging galaxies (long, faint, one-sided), edge-on disks (thin straight streaks)."""


def lens_search_simulate(*, plan: SkyPlan, progress=None) -> Project:
    """The lens-search project: survey cutouts at ``lens_prevalence`` plus gold training lenses."""
    if not 0 < plan.lens_prevalence < 1:
        raise ValueError("lens_prevalence must be in (0, 1)")
    project = project_get_or_create(
        slug=plan.project + LENS_PROJECT_SUFFIX,
        name="Skyloop lens search",
        description="Simulated DECaLS-like cutouts of massive galaxies: find the strong gravitational lenses.",
    )
    if not Workflow.objects.filter(project=project, slug=LENS_WORKFLOW).exists():
        workflow_create(
            project=project, slug=LENS_WORKFLOW, name="Space Warps: find the lenses", kind=Workflow.Kind.IMAGE,
            task_tree=lenses.LENS_TREE, tutorial=LENS_TUTORIAL, field_guide=LENS_GUIDE,
            retire_min=2, retire_after=20, train_min_new_labels=plan.train_min_new_labels,
            rare_answer=0, rare_prior=plan.lens_prevalence, detect_posterior=0.95, reject_posterior=1e-3,
            interest_weight=20.0,
        )
    rng = np.random.default_rng([plan.seed, 9])
    offset = project.subjects.count()
    n_training = max(1, round(plan.training_lens_fraction * plan.n_lens_cutouts))
    is_lens = rng.random(plan.n_lens_cutouts) < plan.lens_prevalence
    kinds = [("survey", bool(lens)) for lens in is_lens] + [("training", True)] * n_training
    order = rng.permutation(len(kinds))  # training lenses mixed in, not at the end
    config = lenses.LensConfig()
    for start in range(0, len(kinds), CHUNK):
        batch, gold = [], {}
        for position, i in enumerate(order[start : start + CHUNK], start=start):
            role, lens = kinds[i]
            if lens:
                cube, truth = lenses.simulate_lens(rng, lenses.TRAINING_LENSES if role == "training" else config)
            else:
                cube, truth = lenses.simulate_non_lens(rng, config)
            ra, dec = _sky_position(rng)
            data = fitsio.ImageData(cube=cube, bands=tuple(config.sky.bands), ra=ra, dec=dec, nan_fraction=0.0,
                                    header={"ORIGIN": "skyloop-sim"})
            name = f"sim-lens-{offset + position:06d}"  # nothing in the name tells a training lens apart
            if role == "training" or (not lens and rng.random() < plan.gold_fraction):
                gold[name] = dict(lenses.CLASS_ANSWERS[truth["class"]])
            batch.append(NewSubject(kind=Subject.Kind.IMAGE, external_id=name, data=data,
                                    truth=_plain({**truth, "role": role})))
        created = subjects_create(project=project, new_subjects=batch)
        known = [s for s in created if s.external_id in gold]
        for state in SubjectState.objects.filter(subject__in=known).select_related("subject"):
            state.gold_answers = gold[state.subject.external_id]
            state.save(update_fields=["gold_answers"])
        if progress:
            progress("lens cutouts", min(start + CHUNK, len(kinds)), len(kinds))
    return project
