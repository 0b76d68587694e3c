"""The consensus benchmark (issue #4): clicks per subject for consensus accuracy on the root question.

Pure mlcore (no Django, no database). One simulation, shared by the three methods:

- Subjects: N_SUBJECTS cutouts drawn by ``sky.simulate_cutouts`` with the default class weights
  (smooth_round .22, smooth_cigar .10, featured_disk .25, edge_on_disk .12, merger .08,
  star .15, artefact .08), so the joint distribution is exactly the simulated sky's: S/N
  log-uniform in [5, 300], seeing 1.0-1.4", half-light radii down to 0.5". Its difficulty
  is broad and weighted to the hard end: quantiles 10/25/50/75/90% = 0.00/0.21/0.51/0.74/0.87
  in the reported run (the ``difficulty_p*`` figures). Truth is the class's root answer of
  GALAXY_TREE's T0: smooth (.32), features or disk (.45), star or artefact (.23).
- Crowd: N_VOLUNTEERS from ``make_crowd`` with 10% spammers (half always answer the first
  answer, half click at random), 10% careless, 10% experts, 70% typical; how much each
  person classifies is log-normal (sigma 1), so a few do much of the work. Each subject
  has one pre-drawn sequence of MAX_VOTES distinct volunteers and their root answers
  (``simulated_annotation``, difficulty-dependent perception); every method reads a
  prefix of the same sequence.
- (a) majority vote of the first N votes (ties broken at random); N = 40 is GZ2's budget.
- (b) skill-weighted: each volunteer first answers GOLD_PER_VOLUNTEER gold subjects (these
  clicks count in the effort). Subjects arrive in a stream and retire by one workflow's rule
  (``consensus.sequential_retirement``, the product's ``retire_posterior`` / ``retire_min``
  / ``retire_after``): when the Dawid-Skene posterior's maximum reaches the threshold after
  at least ``retire_min`` votes, or at the cap ``retire_after`` (<= MAX_VOTES). Retired,
  confident subjects update their voters' pseudo-counts online; every EM_EVERY subjects a
  full EM over all votes so far (gold clamped) re-estimates skills and the class prior. The
  label is the posterior's argmax *at retirement*.
- (c) (b) with the model as one more agent, entering before the first vote. The model is
  the project's real one: a QuestionHead on frozen EfficientNet-Lite0 embeddings of the
  cutouts, trained with ``mlcore.train.fit`` on N_TRAIN other cutouts labelled by
  VOTES_PER_TRAIN simulated volunteers each (votes, not truth), predicting with MC dropout.
  Its confusion, binned by confidence (quartiles of its top probability), is measured on
  N_HELDOUT separate subjects.
- The operating point of each of (b) and (c), i.e. (threshold, retire_min, retire_after) from
  THRESHOLDS x RETIRE_MIN x RETIRE_AFTER, is chosen jointly on a separate TUNING_SEED run (the
  cheapest rule reaching TARGET_ACCURACY there) and reported on REPORT_SEED; the
  ``threshold_*``, ``retire_min_*`` and ``retire_after_*`` figures say which. The plot draws
  the report run's threshold sweep at the chosen (retire_min, retire_after), for (c) also the
  earlier threshold-only rule (retire_min 3, cap 40) dashed, and in grey every rule of (c)'s
  tuning sweep, one marker per cap. On this sky a cap below 40 never pays: the subjects that
  do not converge are the hard ones, which need the votes to be right; lowering retire_min
  pays a little once the model votes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlcore import consensus
from mlcore.models.image import ImageBackbone, QuestionHead
from mlcore.predict import mc_dropout_probs
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation
from mlcore.train import TrainConfig, fit

N_SUBJECTS = 2000
N_VOLUNTEERS = 300
N_GOLD = 100
N_HELDOUT = 500
GOLD_PER_VOLUNTEER = 3
MAX_VOTES = 40  # GZ2's budget: the fixed-N baseline and the longest pre-drawn vote sequence
EM_EVERY = 200
# The operating point, one workflow's retirement settings, chosen jointly on the tuning run:
THRESHOLDS = (0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 0.999)  # retire_posterior
RETIRE_MIN = (1, 2, 3)  # retire_min
RETIRE_AFTER = (10, 15, 20, MAX_VOTES)  # retire_after: the cap on classifications per subject
THRESHOLD_ONLY = (3, MAX_VOTES)  # (retire_min, retire_after) of the earlier rule, drawn for comparison
TARGET_ACCURACY = 0.95
N_TRAIN = 2000  # the model's training set, labelled by VOTES_PER_TRAIN volunteers each
VOTES_PER_TRAIN = 5
EM_TOL = 1e-4
TUNING_SEED, REPORT_SEED = 101, 202
K = 3  # answers of T0
LAYOUT = [("T0", K)]


@dataclass(frozen=True)
class World:
    """One simulated sky + crowd; shapes: N subjects, G gold, H held-out, V volunteers."""

    classes: np.ndarray  # (N,) str
    truth: np.ndarray  # (N,) root answer
    difficulty: np.ndarray  # (N,)
    voters: np.ndarray  # (N, MAX_VOTES) volunteer index, in arrival order
    answers: np.ndarray  # (N, MAX_VOTES)
    gold_votes: np.ndarray  # (V * GOLD_PER_VOLUNTEER, 3) rows (gold index, volunteer, answer)
    gold_truth: np.ndarray  # (G,)
    model_probs: np.ndarray  # (N, K)
    heldout_probs: np.ndarray  # (H, K)
    heldout_classes: np.ndarray  # (H,) str
    heldout_difficulty: np.ndarray  # (H,)
    heldout_truth: np.ndarray  # (H,)


@dataclass(frozen=True)
class Rule:
    """One operating point: the workflow's retire_posterior, retire_min and retire_after."""

    threshold: float
    retire_min: int
    retire_after: int


def run(results: Path) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    tuning, report = _world(TUNING_SEED), _world(REPORT_SEED)
    tuned = {agent: _sweep(tuning, agent, _all_rules()) for agent in (False, True)}
    rules = {agent: _pick(tuned[agent]) for agent in (False, True)}
    curves = {agent: _sweep(report, agent, _threshold_curve(rules[agent].retire_min, rules[agent].retire_after))
              for agent in (False, True)}
    threshold_only = _sweep(report, True, _threshold_curve(*THRESHOLD_ONLY))
    weighted, with_model = curves[False][rules[False]], curves[True][rules[True]]
    majority = _majority_curve(report)
    figures = {
        "accuracy_fixed40": float(majority[MAX_VOTES - 1]),
        "accuracy_weighted": weighted[0],
        "accuracy_weighted_model": with_model[0],
        "classifications_per_subject_weighted": weighted[1],
        "classifications_per_subject_weighted_model": with_model[1],
        "effort_ratio_vs_fixed40": MAX_VOTES / with_model[1],
        "model_accuracy_heldout": float((report.heldout_probs.argmax(axis=1) == report.heldout_truth).mean()),
        "classifications_per_subject_for_95_majority": _cheapest_majority(majority),
    }
    for agent, name in ((False, "weighted"), (True, "weighted_model")):
        figures[f"threshold_{name}"] = rules[agent].threshold
        figures[f"retire_min_{name}"] = rules[agent].retire_min
        figures[f"retire_after_{name}"] = rules[agent].retire_after
    figures.update({f"difficulty_p{q}": float(np.percentile(report.difficulty, q)) for q in (10, 25, 50, 75, 90)})
    _plot(results / "consensus.png", majority, curves, rules, threshold_only, tuned[True])
    return figures


# ---------------------------------------------------------------- the simulated world


def _world(seed: int) -> World:
    rng = np.random.default_rng(seed)
    n_stream = N_SUBJECTS + N_GOLD + N_HELDOUT
    cutouts = sky.simulate_cutouts(n_stream + N_TRAIN, seed)
    classes = np.array([t["class"] for _, t in cutouts])
    difficulty = np.array([t["difficulty"] for _, t in cutouts])
    embeddings = ImageBackbone().embed(np.stack([cube for cube, _ in cutouts]))
    stream, gold, held, train = np.split(np.arange(n_stream + N_TRAIN), np.cumsum([N_SUBJECTS, N_GOLD, N_HELDOUT]))
    crowd = make_crowd(N_VOLUNTEERS, rng, spammer_fraction=0.1, careless_fraction=0.1, expert_fraction=0.1)
    activity = rng.lognormal(0.0, 1.0, N_VOLUNTEERS)
    activity /= activity.sum()

    def votes(subjects: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        voters = np.stack([rng.choice(N_VOLUNTEERS, n, replace=False, p=activity) for _ in subjects])
        answers = np.array([[_root_answer(crowd[v], classes[s], difficulty[s], rng) for v in row]
                            for row, s in zip(voters, subjects, strict=True)])
        return voters, answers

    voters, answers = votes(stream, MAX_VOTES)
    gold_votes = np.array([(g, v, _root_answer(crowd[v], classes[gold[g]], difficulty[gold[g]], rng))
                           for v in range(N_VOLUNTEERS) for g in rng.choice(N_GOLD, GOLD_PER_VOLUNTEER, replace=False)])
    _, train_answers = votes(train, VOTES_PER_TRAIN)
    probs = _model_probs(embeddings[train], np.eye(K)[train_answers].sum(axis=1), embeddings, seed)
    return World(classes[stream], _roots(classes[stream]), difficulty[stream], voters, answers, gold_votes,
                 _roots(classes[gold]), probs[stream], probs[held], classes[held], difficulty[held],
                 _roots(classes[held]))


def _model_probs(train_x: np.ndarray, train_counts: np.ndarray, x: np.ndarray, seed: int) -> np.ndarray:
    """(N, K) MC-dropout mean probabilities of the project's real model: a head on the frozen
    EfficientNet-Lite0 embeddings, trained as the loop trains it, on volunteers' votes (not truth)."""
    torch.manual_seed(seed)
    head = QuestionHead(train_x.shape[1], LAYOUT)
    fit(head, train_x, train_counts, LAYOUT, TrainConfig(seed=seed), device=torch.device("cpu"))
    return mc_dropout_probs(head, x, LAYOUT, n_samples=15, device=torch.device("cpu"), seed=seed).mean(axis=2)


def _roots(classes) -> np.ndarray:
    return np.array([sky.CLASS_ANSWERS[c]["T0"] for c in classes])


def _root_answer(volunteer, cls: str, difficulty: float, rng: np.random.Generator) -> int:
    return simulated_annotation(volunteer, sky.GALAXY_TREE, sky.CLASS_ANSWERS, cls, difficulty, rng)[0]["answer"]


# ---------------------------------------------------------------- the three methods


def _majority_curve(world: World) -> np.ndarray:
    """(MAX_VOTES,) accuracy of majority vote over the first n votes, n = 1..MAX_VOTES."""
    rng = np.random.default_rng(0)
    onehot = np.eye(K)[world.answers]  # (N, MAX_VOTES, K)
    counts = np.cumsum(onehot, axis=1) + rng.uniform(0, 1e-3, size=(len(world.truth), 1, K))  # random tie-break
    return (counts.argmax(axis=2) == world.truth[:, None]).mean(axis=0)


def _cheapest_majority(curve: np.ndarray) -> float:
    reached = np.flatnonzero(curve >= TARGET_ACCURACY)
    return float(reached[0] + 1) if len(reached) else float("nan")


def _all_rules() -> list[Rule]:
    return [Rule(t, low, cap) for t in THRESHOLDS for low in RETIRE_MIN for cap in RETIRE_AFTER if low <= cap]


def _threshold_curve(retire_min: int, retire_after: int) -> list[Rule]:
    return [Rule(t, retire_min, retire_after) for t in THRESHOLDS]


def _sweep(world: World, with_model: bool, rules: list[Rule]) -> dict[Rule, tuple[float, float]]:
    """{rule: (accuracy, classifications per subject incl. gold)}."""
    return {rule: _stream(world, rule, with_model) for rule in rules}


def _pick(sweep: dict[Rule, tuple[float, float]]) -> Rule:
    """The cheapest rule reaching TARGET_ACCURACY (else the most accurate one)."""
    good = [(effort, rule.threshold, rule) for rule, (accuracy, effort) in sweep.items() if accuracy >= TARGET_ACCURACY]
    if good:
        return min(good, key=lambda g: g[:2])[2]
    return max(sweep, key=lambda rule: sweep[rule][0])


def _stream(world: World, rule: Rule, with_model: bool) -> tuple[float, float]:
    n_subjects = len(world.truth)
    prior_counts = consensus.dirichlet_prior(K)
    known = np.concatenate([np.full(n_subjects, -1), world.gold_truth])  # gold subjects come after the stream
    gold = world.gold_votes + np.array([n_subjects, 0, 0])
    skill = consensus.skill_em(gold, K, n_subjects=len(known), n_volunteers=N_VOLUNTEERS, known=known, tol=EM_TOL)
    counts, class_prior = skill.counts, np.full(K, 1.0 / K)
    model_prior = _model_prior(world, with_model)  # (N, K) likelihood-weighted start, or ones
    labels, used, log = np.zeros(n_subjects, dtype=int), np.zeros(n_subjects, dtype=int), [gold]
    for start in range(0, n_subjects, EM_EVERY):
        for s in range(start, min(start + EM_EVERY, n_subjects)):
            voters, answers = world.voters[s, :rule.retire_after], world.answers[s, :rule.retire_after]
            posterior, used[s] = consensus.sequential_retirement(
                class_prior * model_prior[s], consensus.confusion_from_counts(counts[voters], prior_counts), answers,
                threshold=rule.threshold, min_votes=rule.retire_min, max_votes=rule.retire_after)
            labels[s] = posterior.argmax()
            voters, answers = voters[:used[s]], answers[:used[s]]
            if posterior.max() >= rule.threshold:
                for v, a in zip(voters, answers, strict=True):
                    counts[v] = consensus.confusion_update(counts[v], posterior, int(a))
            log.append(np.stack([np.full(used[s], s), voters, answers], axis=1))
        skill = consensus.skill_em(np.concatenate(log), K, n_subjects=len(known), n_volunteers=N_VOLUNTEERS,
                                   known=known, init_confusions=consensus.confusion_from_counts(counts, prior_counts),
                                   tol=EM_TOL)
        counts, class_prior = skill.counts, skill.class_prior
    effort = (used.sum() + len(world.gold_votes)) / n_subjects
    return float((labels == world.truth).mean()), float(effort)


def _model_prior(world: World, with_model: bool) -> np.ndarray:
    """(N, K) the model agent's likelihood column for each subject (ones without a model)."""
    if not with_model:
        return np.ones((len(world.truth), K))
    edges = tuple(np.quantile(world.heldout_probs.max(axis=1), [0.25, 0.5, 0.75]))
    confusion = consensus.model_confusion(world.heldout_probs, world.heldout_truth, confidence_edges=edges)
    return confusion[:, consensus.model_answers(world.model_probs, edges)].T


def _plot(path: Path, majority: np.ndarray, curves: dict, rules: dict, threshold_only: dict, tuned: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    ax.plot(np.arange(1, MAX_VOTES + 1), majority, color="#888888", label="(a) majority vote of first N")
    for cap, marker in zip(RETIRE_AFTER, "v^<>", strict=True):  # what each cap buys, on the tuning run
        points = [p for rule, p in tuned.items() if rule.retire_after == cap]
        ax.plot([p[1] for p in points], [p[0] for p in points], marker, ms=4, color="#bbbbbb", zorder=1,
                label=f"(c) tuning run, cap {cap}, every threshold and min")
    points = sorted(threshold_only.values(), key=lambda p: p[1])
    ax.plot([p[1] for p in points], [p[0] for p in points], "--", color="#9c4f0b", zorder=3,
            label=f"(c) min {THRESHOLD_ONLY[0]}, cap {THRESHOLD_ONLY[1]} (the earlier rule)")
    for agent, colour, name in ((False, "#1d2d44", "(b) skill-weighted"), (True, "#f4a259", "(c) + model agent")):
        rule = rules[agent]
        points = sorted(curves[agent].values(), key=lambda p: p[1])
        ax.plot([p[1] for p in points], [p[0] for p in points], "o-", color=colour,
                label=f"{name}, min {rule.retire_min}, cap {rule.retire_after}")
        accuracy, effort = curves[agent][rule]
        ax.plot([effort], [accuracy], "*", ms=14, color=colour)
    ax.axhline(TARGET_ACCURACY, color="k", ls=":", lw=1)
    ax.axvline(MAX_VOTES / 8, color="k", ls=":", lw=1)  # the goal: 8x fewer than 40
    ax.set_xscale("log")
    ax.set_xlabel("classifications per subject ((b), (c) include gold)")
    ax.set_ylabel("accuracy of the root answer vs truth")
    ax.set_title("consensus on T0; lines sweep the threshold;\n* = rule chosen on a tuning run (threshold, min, cap)",
                 fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
