"""The consensus benchmark (issue #4): clicks per subject for consensus accuracy on the root question.

Pure mlcore (no Django, no database). One simulation, shared by the three methods:

- Subjects: N_SUBJECTS cutouts drawn by ``sky.simulate_cutouts`` with the default class weights
  (smooth_round .22, smooth_cigar .10, featured_disk .25, edge_on_disk .12, merger .08,
  star .15, artefact .08), so the joint distribution is exactly the simulated sky's: S/N
  log-uniform in [5, 300], seeing 1.0-1.4", half-light radii down to 0.5". Its difficulty
  is broad and weighted to the hard end: quantiles 10/25/50/75/90% = 0.00/0.25/0.51/0.71/0.84
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
  clicks count in the effort). Subjects arrive in a stream; a subject retires when the
  Dawid-Skene posterior's maximum reaches the threshold after at least MIN_VOTES votes, or
  at MAX_VOTES. Retired, confident subjects update their voters' pseudo-counts online;
  every EM_EVERY subjects a full EM over all votes so far (gold clamped) re-estimates
  skills and the class prior. The label is the posterior's argmax *at retirement*.
- (c) (b) with the model as one more agent, entering before the first vote. The model is
  the project's real one: a QuestionHead on frozen EfficientNet-Lite0 embeddings of the
  cutouts, trained with ``mlcore.train.fit`` on N_TRAIN other cutouts labelled by
  VOTES_PER_TRAIN simulated volunteers each (votes, not truth), predicting with MC dropout.
  Its confusion, binned by confidence, is measured on N_HELDOUT separate subjects.
- The posterior threshold of each of (b) and (c) is chosen on a separate TUNING_SEED run
  (cheapest threshold reaching 0.95 accuracy there) and reported on REPORT_SEED.
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
MAX_VOTES = 40
MIN_VOTES = 3
EM_EVERY = 200
THRESHOLDS = (0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999)
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


def run(results: Path) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    tuning, report = _world(TUNING_SEED), _world(REPORT_SEED)
    thresholds = {agent: _pick_threshold(_sweep(tuning, agent)) for agent in (False, True)}
    sweeps = {agent: _sweep(report, agent) for agent in (False, True)}
    weighted = sweeps[False][thresholds[False]]
    with_model = sweeps[True][thresholds[True]]
    majority = _majority_curve(report)
    figures = {
        "accuracy_fixed40": float(majority[MAX_VOTES - 1]),
        "accuracy_weighted": weighted[0],
        "accuracy_weighted_model": with_model[0],
        "classifications_per_subject_weighted": weighted[1],
        "classifications_per_subject_weighted_model": with_model[1],
        "effort_ratio_vs_fixed40": MAX_VOTES / with_model[1],
        "threshold_weighted": thresholds[False],
        "threshold_weighted_model": thresholds[True],
        "model_accuracy_heldout": float((report.heldout_probs.argmax(axis=1) == report.heldout_truth).mean()),
        "classifications_per_subject_for_95_majority": _cheapest_majority(majority),
    }
    figures.update({f"difficulty_p{q}": float(np.percentile(report.difficulty, q)) for q in (10, 25, 50, 75, 90)})
    _plot(results / "consensus.png", majority, sweeps, thresholds)
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


def _sweep(world: World, with_model: bool) -> dict[float, tuple[float, float]]:
    """{threshold: (accuracy, classifications per subject incl. gold)}."""
    return {t: _stream(world, t, with_model) for t in THRESHOLDS}


def _pick_threshold(sweep: dict[float, tuple[float, float]]) -> float:
    good = [t for t, (accuracy, _) in sweep.items() if accuracy >= TARGET_ACCURACY]
    return min(good) if good else max(sweep)


def _stream(world: World, threshold: float, with_model: bool) -> tuple[float, float]:
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
            confusions = consensus.confusion_from_counts(counts, prior_counts)  # (V, K, K)
            posterior, used[s] = _retire(class_prior * model_prior[s], confusions, world.voters[s],
                                         world.answers[s], threshold)
            labels[s] = posterior.argmax()
            voters, answers = world.voters[s, :used[s]], world.answers[s, :used[s]]
            if posterior.max() >= threshold:
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


def _retire(prior: np.ndarray, confusions: np.ndarray, voters: np.ndarray, answers: np.ndarray,
            threshold: float) -> tuple[np.ndarray, int]:
    """Posterior at retirement and the number of votes used: the first n >= MIN_VOTES crossing ``threshold``."""
    log_lik = np.log(confusions[voters, :, answers])  # (MAX_VOTES, K)
    log_post = np.log(prior) + np.cumsum(log_lik, axis=0)  # (MAX_VOTES, K) after 1..MAX_VOTES votes
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    crossed = np.flatnonzero(post[MIN_VOTES - 1:].max(axis=1) >= threshold)
    n = MIN_VOTES + int(crossed[0]) if len(crossed) else MAX_VOTES
    return consensus.posterior_from_votes(prior / prior.sum(), confusions[voters[:n]], answers[:n]), n


def _plot(path: Path, majority: np.ndarray, sweeps: dict, thresholds: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(np.arange(1, MAX_VOTES + 1), majority, color="#888888", label="(a) majority vote of first N")
    for agent, colour, name in ((False, "#1d2d44", "(b) skill-weighted"), (True, "#f4a259", "(c) + model agent")):
        points = sorted(sweeps[agent].values(), key=lambda p: p[1])
        ax.plot([p[1] for p in points], [p[0] for p in points], "o-", color=colour, label=name)
        accuracy, effort = sweeps[agent][thresholds[agent]]
        ax.plot([effort], [accuracy], "*", ms=14, color=colour)
    ax.axhline(TARGET_ACCURACY, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("classifications per subject ((b), (c) include gold)")
    ax.set_ylabel("accuracy of the root answer vs truth")
    ax.set_title("consensus on T0; * = operating point chosen on a tuning run")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
