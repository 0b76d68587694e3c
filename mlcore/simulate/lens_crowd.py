"""Simulated volunteers looking for lenses: faint, small lenses are missed, look-alikes fool some.

Uses the crowd of ``mlcore.simulate.volunteers`` (skill per person, >= 10% spammers and
careless people, slips). For a lens, the chance of answering "yes" falls from the
volunteer's skill on an obvious lens to their false-positive rate on an invisible one, as
the lens's difficulty (``lenses.lens_difficulty``: arc S/N and theta_E / seeing) grows.
For a non-lens, the false-positive rate grows with how lens-like it is (``lenses.LOOKALIKE``:
blue rings and arcs fool people, plain ellipticals do not) and shrinks with skill. Half the
spammers always say "yes" (the first answer), the others click at random. This is the
2 x 2 confusion model of SWAP (Marshall+2016) with difficulty-dependent rates.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mlcore.simulate.volunteers import KINDS, SimVolunteer

YES, NO = 0, 1  # answers of lenses.LENS_TREE's first question
FALSE_POSITIVE_BASE = 0.06  # a volunteer of skill s says "lens" for a plain elliptical with (1 - s) * this
FALSE_POSITIVE_LOOKALIKE = 0.4  # ... and for the most lens-like negative with (1 - s) * (base + this)


def false_positive_rate(volunteer: SimVolunteer, lookalike: float) -> float:
    return (1.0 - volunteer.skill) * (FALSE_POSITIVE_BASE + FALSE_POSITIVE_LOOKALIKE * float(lookalike))


def p_says_lens(volunteer: SimVolunteer, truth: Mapping) -> float:
    """P(this volunteer answers "yes, a lens") for an object with simulation ``truth``."""
    if volunteer.kind == "spammer":
        return 1.0 if volunteer.name.endswith("-first") else 0.5
    _, slip = KINDS.get(volunteer.kind, KINDS["typical"])
    if truth["is_lens"]:
        floor = false_positive_rate(volunteer, 0.0)
        p = floor + (volunteer.skill - floor) * (1.0 - float(truth["difficulty"]))
    else:
        p = false_positive_rate(volunteer, truth["difficulty"])
    return (1.0 - slip) * p + slip * 0.5


def lens_vote(volunteer: SimVolunteer, truth: Mapping, u: float) -> int:
    """The answer (YES or NO) given a uniform draw ``u``: the same ``u`` gives the same answer."""
    return YES if u < p_says_lens(volunteer, truth) else NO


def vote_draws(seed: int, n_volunteers: int, n_subjects: int) -> np.ndarray:
    """(V, N) uniform draws, one per volunteer and subject (common random numbers across strategies)."""
    return np.random.default_rng(seed).random((n_volunteers, n_subjects), dtype=np.float32)
