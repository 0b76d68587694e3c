"""A simulated crowd: per-person skill, confusions between look-alike classes, slips, spammers.

Each volunteer "perceives" a class: the true one with a probability that falls with the
object's difficulty, otherwise a look-alike drawn from a class-similarity matrix; then
answers the decision tree as an expert would for the perceived class, with a per-question
slip rate. Spammers answer at random (or always the first answer). This follows the
per-volunteer confusion model of Dawid & Skene (1979) as used by SWAP (Marshall+2016),
with difficulty-dependent skill; SCIENCE.md asks for >= 10% careless or malicious people.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mlcore.tasktree import path_for_answers

# How easily one class is mistaken for another (symmetric, unnormalised; diagonal unused).
# Faint round galaxies and stars, disks and edge-ons, mergers and featured disks look alike.
LOOKALIKE = {
    ("smooth_round", "smooth_cigar"): 1.0,
    ("smooth_round", "star"): 2.0,
    ("smooth_round", "featured_disk"): 1.5,
    ("smooth_cigar", "edge_on_disk"): 2.0,
    ("featured_disk", "edge_on_disk"): 1.0,
    ("featured_disk", "merger"): 1.5,
    ("smooth_round", "merger"): 0.7,
    ("star", "artefact"): 0.8,
    ("edge_on_disk", "artefact"): 0.3,
    ("dla", "no_dla"): 1.0,
}
BACKGROUND = 0.1  # any class can be mistaken for any other, a little

KINDS = {
    # kind: (skill range on easy objects, slip rate per question)
    "expert": ((0.93, 0.99), 0.01),
    "typical": ((0.75, 0.92), 0.04),
    "careless": ((0.45, 0.65), 0.2),
    "spammer": ((0.0, 0.0), 1.0),
}


@dataclass(frozen=True)
class SimVolunteer:
    name: str
    kind: str  # "expert" | "typical" | "careless" | "spammer"
    skill: float  # probability of perceiving the true class on an easy object


def make_crowd(
    n: int,
    rng: np.random.Generator,
    *,
    spammer_fraction: float = 0.1,
    careless_fraction: float = 0.1,
    expert_fraction: float = 0.1,
) -> list[SimVolunteer]:
    """``n`` volunteers; at least one spammer and one careless person once n >= 10."""
    counts = {
        "spammer": int(round(spammer_fraction * n)),
        "careless": int(round(careless_fraction * n)),
        "expert": int(round(expert_fraction * n)),
    }
    counts["typical"] = n - sum(counts.values())
    if counts["typical"] < 0:
        raise ValueError("fractions add up to more than 1")
    crowd = []
    for kind, count in counts.items():
        (lo, hi), _ = KINDS[kind]
        crowd += [SimVolunteer(f"{kind}-{len(crowd) + i}", kind, float(rng.uniform(lo, hi))) for i in range(count)]
    order = rng.permutation(len(crowd))
    return [crowd[i] for i in order]


def _lookalike_weights(truth: str, classes: list[str]) -> np.ndarray:
    weights = np.array(
        [LOOKALIKE.get((truth, c), LOOKALIKE.get((c, truth), BACKGROUND)) if c != truth else 0.0 for c in classes]
    )
    return weights / weights.sum()


def perceived_class(volunteer: SimVolunteer, truth: str, classes: list[str], difficulty: float, rng) -> str:
    """The class this volunteer believes they see. Skill decays towards chance with difficulty."""
    chance = 1.0 / len(classes)
    p_right = chance + (volunteer.skill - chance) * (1.0 - 0.75 * float(np.clip(difficulty, 0, 1)))
    if rng.random() < p_right:
        return truth
    return classes[rng.choice(len(classes), p=_lookalike_weights(truth, classes))]


def simulated_annotation(
    volunteer: SimVolunteer,
    tree: Mapping,
    class_answers: Mapping[str, Mapping[str, int]],
    truth_class: str,
    difficulty: float,
    rng: np.random.Generator,
) -> list[dict]:
    """One valid walk of ``tree`` as this volunteer would answer for a ``truth_class`` object."""
    if volunteer.kind == "spammer":
        always_first = volunteer.name.endswith(("0", "2", "4", "6", "8"))
        return path_for_answers(tree, lambda task, n: 0 if always_first else rng.integers(n))
    classes = list(class_answers)
    seen = perceived_class(volunteer, truth_class, classes, difficulty, rng)
    answers = class_answers[seen]
    _, slip = KINDS[volunteer.kind]

    def choose(task: str, n: int) -> int:
        if task not in answers or rng.random() < slip:
            return int(rng.integers(n))
        return answers[task]

    return path_for_answers(tree, choose)
