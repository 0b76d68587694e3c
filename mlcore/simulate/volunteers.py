"""A simulated crowd: per-person skill, look-alike confusions, slips, careless people and spammers.

A volunteer first "perceives" a class: the true one with a probability that starts near
their skill on easy objects and falls towards chance on the hardest; otherwise a
look-alike drawn from a row-normalised class-similarity matrix. They then walk the
decision tree as an expert would for the perceived class, slipping to a random answer
now and then. This is the per-volunteer confusion model of Dawid & Skene (1979) that SWAP
uses (Marshall et al. 2016), with difficulty-dependent skill; SCIENCE.md asks for >= 10%
careless or malicious people in every crowd.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlcore.tasktree import path_for_answers

# How easily two classes are mistaken for each other (symmetric, before normalising rows).
# Faint round galaxies look like stars, thin disks like cigars, mergers like disturbed disks.
LOOKALIKE: dict[tuple[str, str], float] = {
    ("smooth_round", "star"): 2.0,
    ("smooth_cigar", "edge_on_disk"): 2.0,
    ("featured_disk", "merger"): 1.5,
    ("smooth_round", "featured_disk"): 1.5,
    ("featured_disk", "edge_on_disk"): 1.0,
    ("smooth_round", "smooth_cigar"): 1.0,
    ("star", "artefact"): 0.8,
    ("smooth_round", "merger"): 0.7,
    ("edge_on_disk", "artefact"): 0.3,
    ("dla", "no_dla"): 1.0,
}
# At the faint end these pairs become much more alike (a point source and a compact
# galaxy differ only in a PSF-sized halo).
FAINT_LOOKALIKE: dict[tuple[str, str], float] = {("smooth_round", "star"): 3.0, ("featured_disk", "smooth_round"): 1.5}
BACKGROUND = 0.1  # anything can be mistaken for anything, a little
HARDEST_RETAINED = 0.3  # share of skill above chance that survives on the hardest objects

# kind -> (skill range on easy objects, slip probability per question)
KINDS: dict[str, tuple[tuple[float, float], float]] = {
    "expert": ((0.93, 0.99), 0.01),
    "typical": ((0.75, 0.92), 0.04),
    "careless": ((0.40, 0.65), 0.20),
    "spammer": ((0.0, 0.0), 1.0),
}


@dataclass(frozen=True)
class SimVolunteer:
    name: str
    kind: str  # "expert" | "typical" | "careless" | "spammer"
    skill: float  # probability of perceiving the true class on an easy object


def make_crowd(n: int, rng: np.random.Generator, *, spammer_fraction: float = 0.1, careless_fraction: float = 0.1,
               expert_fraction: float = 0.1) -> list[SimVolunteer]:
    """``n`` volunteers in random order; the rest after spammers, careless and experts are typical.

    Spammer and careless counts round up, so a crowd never has fewer of them than asked.
    Half the spammers (names ending "-first") always pick the first answer; the others
    click at random.
    """
    fractions = (spammer_fraction, careless_fraction, expert_fraction)
    if n < 0 or any(f < 0 for f in fractions) or sum(fractions) > 1:
        raise ValueError("n must be >= 0 and the fractions non-negative with a sum <= 1")
    counts = {"spammer": math.ceil(spammer_fraction * n - 1e-9), "careless": math.ceil(careless_fraction * n - 1e-9)}
    counts["expert"] = min(round(expert_fraction * n), n - sum(counts.values()))
    if counts["expert"] < 0:
        raise ValueError(f"a crowd of {n} cannot hold that many spammers and careless people")
    counts["typical"] = n - sum(counts.values())
    crowd = []
    for kind, count in counts.items():
        (lo, hi), _ = KINDS[kind]
        for i in range(count):
            style = ("-first" if i % 2 else "-random") if kind == "spammer" else ""
            crowd.append(SimVolunteer(f"sim-{kind}-{i:03d}{style}", kind, float(rng.uniform(lo, hi))))
    return [crowd[i] for i in rng.permutation(len(crowd))]


def confusion_weights(truth: str, classes: Sequence[str], difficulty: float) -> np.ndarray:
    """Row of the class-similarity matrix for ``truth`` (zero on itself), normalised to sum 1."""
    weights = np.array([0.0 if c == truth else _similarity(truth, c, difficulty) for c in classes])
    total = weights.sum()
    return weights / total if total > 0 else weights


def _similarity(a: str, b: str, difficulty: float) -> float:
    base = LOOKALIKE.get((a, b), LOOKALIKE.get((b, a), BACKGROUND))
    faint = FAINT_LOOKALIKE.get((a, b), FAINT_LOOKALIKE.get((b, a), 0.0))
    return base + faint * difficulty


def p_perceive_true(skill: float, difficulty: float, n_classes: int) -> float:
    """Skill above chance shrinks linearly to HARDEST_RETAINED of itself at difficulty 1."""
    chance = 1.0 / n_classes
    d = min(max(float(difficulty), 0.0), 1.0)
    return chance + max(skill - chance, 0.0) * (1.0 - (1.0 - HARDEST_RETAINED) * d)


def perceived_class(volunteer: SimVolunteer, truth: str, classes: Sequence[str], difficulty: float,
                    rng: np.random.Generator) -> str:
    """The class this volunteer believes they are looking at."""
    if len(classes) < 2 or rng.random() < p_perceive_true(volunteer.skill, difficulty, len(classes)):
        return truth
    return classes[rng.choice(len(classes), p=confusion_weights(truth, classes, difficulty))]


def simulated_annotation(volunteer: SimVolunteer, tree: Mapping, class_answers: Mapping[str, Mapping[str, int]],
                         truth_class: str, difficulty: float, rng: np.random.Generator) -> list[dict]:
    """One walk of ``tree`` (always valid for tasktree.validate_annotation) for a ``truth_class`` object."""
    if truth_class not in class_answers:
        raise ValueError(f"no expert answers for class {truth_class!r}")
    if volunteer.kind == "spammer":
        if volunteer.name.endswith("-first"):
            return path_for_answers(tree, lambda task, n: 0)
        return path_for_answers(tree, lambda task, n: rng.integers(n))
    seen = class_answers[perceived_class(volunteer, truth_class, list(class_answers), difficulty, rng)]
    _, slip = KINDS.get(volunteer.kind, KINDS["typical"])

    def choose(task: str, n_answers: int) -> int:
        # a slip, or a task the perceived class never reaches (after an earlier slip)
        if task not in seen or rng.random() < slip:
            return int(rng.integers(n_answers))
        return int(seen[task])

    return path_for_answers(tree, choose)
