"""The rare-object benchmark (issue #9): lenses found per 1,000 volunteer inspections, random vs Skyloop.

One simulation, shared by both strategies (``mlcore.simulate.lenses``, ``lens_crowd``):

- Survey: N_SURVEY cutouts with strong lenses at PREVALENCE (theta_E 0.5-2" from a
  Collett 2015-like population, arc S/N log-uniform 8-200 in g, seeing 1.0-1.4"); the rest
  are ellipticals and hard negatives (blue companions, ring galaxies, spirals, edge-on
  disks, mergers). Arc S/N and theta_E quantiles of the survey's lenses are reported.
- Lens CNN: a small ResNet trained from scratch (``mlcore.models.lens``, ``mlcore.lens_train``;
  DeepLens, Lanusse+2018) on N_TRAIN_LENSES simulated lenses + as many non-lenses drawn from
  the survey's negative mix (hard negatives at their shares): the training prevalence is
  raised by simulation, as Petrillo+2017 and Jacobs+2017 do. Colour-preserving asinh stretch,
  dihedral augmentation, early stopping on a validation split, 8-view test-time averaging.
  The training set, the survey and the trained model are cached under
  ``$SKYLOOP_VAR_DIR/lenscnn`` so reruns skip simulation and training. Evaluated on held-out
  cutouts: the survey itself (realistic prevalence) plus N_EXTRA_LENSES more lenses for a
  tighter completeness. The model's confusion as a voter is measured on the training's
  validation split (never trained on). ``cnn_completeness_at_99_rejection`` (the headline) is
  the share of ALL lenses scored above the 99th percentile of non-lenses; Lanusse+2018 quote
  theirs for lenses with theta_E > 1.4" and arc S/N > 20, so the same subset
  (``..._deeplens_subset``) and a seeing-relative visible subset (arc S/N >= 20, theta_E >=
  0.7 x seeing; ``..._visible``) are reported too, each with its lens count.
- Crowd: N_VOLUNTEERS from ``make_crowd`` (10% spammers, 10% careless, 10% experts),
  log-normal activity. Each inspection: a volunteer (by activity); with the selector's
  gold schedule (0.5 halving every 10 classifications, floor 0.02) a training subject
  (a visible simulated lens, arc S/N >= 20, or a known non-lens) whose answer teaches the volunteer's
  2x2 confusion counts (SWAP, Marshall+2016); otherwise a survey subject from the
  strategy's queue. Posteriors update online with each voter's confusion at vote time, on
  the prior PREVALENCE; retirement is ``retirement.swap_decision`` with the lens
  workflow's settings (detect 0.95, reject 1e-3, at least 2 votes, cap 20).
- Random: a random active subject the volunteer has not seen. Skyloop: with probability
  RANDOM_SHARE the same; otherwise one of the selector's TOP_FEW highest priorities,
  ``acquisition.priorities`` (BALD x (1 + INTEREST_WEIGHT x P(lens)); the samples are the
  8 dihedral views with MC dropout) as the worker writes them; the model is also a voter that can hold back a
  rejection (never detect or reject). Same crowd, same per-(volunteer, subject) random
  draws, same budget, same rules: only the order differs.
- A lens is found when its crowd posterior crosses the detection threshold.
  ``final_purity_at_50_completeness``: the Skyloop final candidate list (every survey
  subject ranked by posterior with the model as a voter; uninspected ones by the model)
  cut where it holds half the survey's lenses.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from labeler.classifications.retirement import swap_decision
from mlcore import acquisition
from mlcore import consensus as ds
from mlcore.lens_train import LensTrainConfig, simulate_lenses, simulate_training_set, train_lens_model
from mlcore.models.lens import LensResNet, lens_probability, lens_probability_samples
from mlcore.simulate import lens_crowd, lenses
from mlcore.simulate.volunteers import make_crowd

SCALE = float(os.environ.get("SKYLOOP_BENCH_LENSES_SCALE", "1"))  # < 1 for a quick look
# Simulation (~20 stamps/s per core) is the cost; everything simulated or trained is cached.
N_SURVEY = int(8000 * SCALE)
PREVALENCE = 0.01
N_TRAIN_LENSES = int(4000 * SCALE)
N_EXTRA_LENSES = int(1000 * SCALE)
N_GOLD = int(600 * SCALE)  # training subjects for volunteers (lenses, as many non-lenses)
CNN_TRAIN = LensTrainConfig(epochs=16, patience=16, max_seconds=540.0, seed=0)  # fits ~10 min on 2 busy CPU cores
CACHE = Path(os.environ.get("SKYLOOP_VAR_DIR", Path(__file__).resolve().parents[1] / "var")) / "lenscnn"
N_VOLUNTEERS = 100
BUDGET = int(24_000 * SCALE)  # inspections, gold included: 3 per survey cutout
RANDOM_SHARE, INTEREST_WEIGHT, TOP_FEW = 0.2, 20.0, 16  # the lens workflow's settings and the selector's
DETECT, REJECT, MIN_VOTES, MAX_VOTES = 0.95, 1e-3, 2, 20
GOLD_START, GOLD_FLOOR, GOLD_HALF_LIFE = 0.5, 0.02, 10
LAYOUT = [("L0", 2)]
SEED = 0


def _completeness_at_rejection(p_lens: np.ndarray, is_lens: np.ndarray, rejection: float) -> float:
    threshold = np.quantile(p_lens[~is_lens], rejection)
    return float((p_lens[is_lens] > threshold).mean())


def _roc(p_lens: np.ndarray, is_lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p_lens)
    hits = is_lens[order]
    return np.cumsum(~hits) / max(1, (~is_lens).sum()), np.cumsum(hits) / max(1, is_lens.sum())


class _Crowd:
    """Volunteers, their activity, their learned 2x2 evidence counts and how much each has done."""

    def __init__(self, rng):
        self.people = make_crowd(N_VOLUNTEERS, rng)
        activity = rng.lognormal(0.0, 1.0, N_VOLUNTEERS)
        self.activity = activity / activity.sum()
        self.counts = np.zeros((N_VOLUNTEERS, 2, 2))
        self.done = np.zeros(N_VOLUNTEERS, dtype=int)
        self.seen: list[set[int]] = [set() for _ in range(N_VOLUNTEERS)]

    def log_lr(self, v: int, answer: int) -> float:
        """log P(answer | lens) - log P(answer | not lens) with the volunteer's current confusion."""
        confusion = ds.confusion_from_counts(self.counts[v], ds.dirichlet_prior(2))
        return float(math.log(confusion[0, answer]) - math.log(confusion[1, answer]))


def _run_strategy(name, survey_truth, draws, gold_truth, priority, model_log_lr, seed):
    """One strategy over BUDGET inspections; returns per-subject log-odds, votes, and the discovery curve."""
    rng = np.random.default_rng([seed, 1])  # volunteers and gold picks: identical in both strategies
    pick = np.random.default_rng([seed, 2, name == "skyloop"])
    crowd = _Crowd(np.random.default_rng([seed, 3]))
    n = len(survey_truth)
    prior_log_odds = math.log(PREVALENCE / (1 - PREVALENCE))
    log_odds = np.full(n, prior_log_odds)
    votes = np.zeros(n, dtype=int)
    active = np.ones(n, dtype=bool)
    order = np.argsort(-priority, kind="stable") if priority is not None else None
    found, curve, reasons = 0, [], {}
    is_lens = np.array([t["is_lens"] for t in survey_truth])
    for _ in range(BUDGET):
        v = int(rng.choice(N_VOLUNTEERS, p=crowd.activity))
        person = crowd.people[v]
        gold_p = max(GOLD_FLOOR, GOLD_START * 0.5 ** (crowd.done[v] / GOLD_HALF_LIFE))
        if rng.random() < gold_p:  # a training subject: feedback teaches the volunteer's confusion
            truth = gold_truth[int(rng.integers(len(gold_truth)))]
            answer = lens_crowd.lens_vote(person, truth, rng.random())
            crowd.counts[v] = ds.confusion_update(crowd.counts[v], 0 if truth["is_lens"] else 1, answer)
        else:
            sid = _next_subject(pick, order, active, crowd.seen[v], n)
            if sid is None:
                curve.append(found)
                continue
            crowd.seen[v].add(sid)
            answer = lens_crowd.lens_vote(person, survey_truth[sid], float(draws[v, sid]))
            log_odds[sid] += crowd.log_lr(v, answer)
            votes[sid] += 1
            p_crowd = _sigmoid(log_odds[sid])
            p_model = _sigmoid(log_odds[sid] + model_log_lr[sid]) if model_log_lr is not None else p_crowd
            reason = swap_decision(p_crowd=p_crowd, p_with_model=p_model, n_votes=int(votes[sid]), detect=DETECT,
                                   reject=REJECT, min_votes=MIN_VOTES, max_votes=MAX_VOTES, prior=PREVALENCE)
            if reason:
                active[sid] = False
                reasons[reason] = reasons.get(reason, 0) + 1
                found += int(reason == "detected" and is_lens[sid])
        crowd.done[v] += 1
        curve.append(found)
    return {"log_odds": log_odds, "votes": votes, "curve": np.array(curve), "found": found, "reasons": reasons}


def _next_subject(pick, order, active, seen: set[int], n: int) -> int | None:
    """Random strategy (order None) or a random-share draw: any active unseen subject; else one of the top few."""
    if order is None or pick.random() < RANDOM_SHARE:
        for _ in range(200):
            sid = int(pick.integers(n))
            if active[sid] and sid not in seen:
                return sid
        pool = np.flatnonzero(active)
        pool = [s for s in pool if s not in seen]
        return int(pick.choice(pool)) if pool else None
    top = []
    for sid in order:
        if active[sid] and sid not in seen:
            top.append(int(sid))
            if len(top) == TOP_FEW:
                break
    return int(pick.choice(top)) if top else None


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


def _purity_at_completeness(score: np.ndarray, is_lens: np.ndarray, completeness: float) -> float:
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(is_lens[order])
    needed = math.ceil(completeness * is_lens.sum())
    k = int(np.searchsorted(hits, needed)) + 1  # list length that first holds `needed` lenses
    return float(needed / k)


def _quantiles(values, prefix: str) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    return {f"{prefix}_p{q}": float(np.quantile(values, q / 100)) for q in (10, 50, 90)} if len(values) else {}


def _train_cnn():
    started = time.perf_counter()
    data = simulate_training_set(n_lenses=N_TRAIN_LENSES, n_negatives=N_TRAIN_LENSES, seed=SEED + 11,
                                 cache=CACHE / f"train-{N_TRAIN_LENSES}-s{SEED + 11}.npz")
    sim_seconds = time.perf_counter() - started
    model_path = CACHE / f"model-{N_TRAIN_LENSES}-{CNN_TRAIN.seed}.pt"
    if model_path.exists():  # trained before on this very set: reuse it and its metrics
        saved = torch.load(model_path, weights_only=False)
        model = LensResNet()
        model.load_state_dict(saved["state"])
        model.eval()
        metrics = saved["metrics"]
    else:
        model, metrics = train_lens_model(cubes=data["cubes"], is_lens=data["is_lens"], config=CNN_TRAIN)
        torch.save({"state": model.state_dict(), "metrics": metrics}, model_path)
    val_idx = metrics["val_idx"]  # never trained on
    return model, metrics, sim_seconds, (data["cubes"][val_idx], data["is_lens"][val_idx]), data


def _survey():
    path = CACHE / f"survey-{N_SURVEY}-s{SEED + 1}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    survey = lenses.simulate_lens_sample(N_SURVEY, PREVALENCE, seed=SEED + 1)
    cubes, truth = np.stack([c for c, _ in survey]), [t for _, t in survey]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".tmp"), "wb") as f:
        pickle.dump((cubes, truth), f)
    path.with_suffix(".tmp").replace(path)
    return cubes, truth


def run(results_dir: Path) -> dict[str, float]:
    rng = np.random.default_rng(SEED)
    model, train_metrics, train_sim_s, (calib_cubes, calib_is_lens), train_data = _train_cnn()
    n_train = len(train_data["cubes"])
    train_truth = _gold_truths()

    started = time.perf_counter()
    lens_cubes = [lenses.simulate_lens(rng)[0] for _ in range(max(20, int(100 * SCALE)))]
    lens_stamps_per_s = len(lens_cubes) / (time.perf_counter() - started)
    survey_cubes, survey_truth = _survey()
    started = time.perf_counter()
    extra_cubes, extra_truth = simulate_lenses(n=N_EXTRA_LENSES, seed=SEED + 23)
    extra_stamps_per_s = N_EXTRA_LENSES / (time.perf_counter() - started)

    started = time.perf_counter()
    survey_probs = lens_probability_samples(model, survey_cubes, seed=SEED)  # (N, 2, 8)
    score_seconds = time.perf_counter() - started
    p_survey = lens_probability(model, survey_cubes)  # deterministic 8-view average
    p_extra = lens_probability(model, extra_cubes)
    p_calib = lens_probability(model, calib_cubes)
    calib_mean = np.stack([p_calib, 1 - p_calib], axis=1)  # (M, 2)
    is_lens = np.array([t["is_lens"] for t in survey_truth])
    p_eval = np.concatenate([p_survey, p_extra])
    lens_eval = np.concatenate([is_lens, np.ones(len(p_extra), dtype=bool)])
    eval_truth = survey_truth + extra_truth

    # the model as a voter: its confusion measured on its held-out validation split (as the worker does)
    confusion = ds.model_confusion(calib_mean, np.where(calib_is_lens, 0, 1))
    symbols = ds.model_answers(np.stack([p_survey, 1 - p_survey], axis=1))
    model_log_lr = np.log(confusion[0, symbols]) - np.log(confusion[1, symbols])
    priority = acquisition.priorities(survey_probs, LAYOUT, "bald", interest_score=p_survey,
                                      interest_weight=INTEREST_WEIGHT)

    draws = lens_crowd.vote_draws(SEED + 7, N_VOLUNTEERS, N_SURVEY)
    # training subjects: visible simulated lenses (lenses.TRAINING_LENSES' arc S/N) and known non-lenses
    gold_truth = [t for t in train_truth if not t["is_lens"] or t["arc_snr"] >= lenses.TRAINING_LENSES.arc_snr_range[0]]
    runs = {
        "random": _run_strategy("random", survey_truth, draws, gold_truth, None, None, SEED),
        "skyloop": _run_strategy("skyloop", survey_truth, draws, gold_truth, priority, model_log_lr, SEED),
    }
    final_score = runs["skyloop"]["log_odds"] + model_log_lr
    figures = _figures(runs, is_lens, p_eval, lens_eval, eval_truth, final_score)
    figures.update({
        "prevalence": float(is_lens.mean()),
        "survey_cutouts": float(N_SURVEY),
        "survey_lenses": float(is_lens.sum()),
        "inspections_budget": float(BUDGET),
        "volunteers": float(N_VOLUNTEERS),
        "cnn_train_cutouts": float(n_train),
        "cnn_train_seconds": float(train_metrics["seconds"]),
        "cnn_train_on_cuda": float(train_metrics["device"] == "cuda"),
        "cnn_train_epochs": float(train_metrics["epochs"]),
        "cnn_val_accuracy": float(train_metrics["val_accuracy"]),
        "cnn_score_cutouts_per_s_cpu": float(N_SURVEY / score_seconds),
        "lens_stamps_per_s": float(lens_stamps_per_s),
        "lens_stamps_per_s_pool": float(extra_stamps_per_s),
        "train_simulation_stamps_per_s": float(n_train / train_sim_s),
        **_quantiles([t["theta_e"] for t in survey_truth if t["is_lens"]], "survey_theta_e"),
        **_quantiles([t["arc_snr"] for t in survey_truth if t["is_lens"]], "survey_arc_snr"),
    })
    _plot(results_dir, runs, p_eval, lens_eval, figures)
    return figures


def _figures(runs, is_lens, p_eval, lens_eval, eval_truth, final_score) -> dict[str, float]:
    rate = {name: 1000.0 * r["found"] / BUDGET for name, r in runs.items()}
    arc_snr = np.array([t["arc_snr"] if t["is_lens"] else np.nan for t in eval_truth])
    theta_e = np.array([t["theta_e"] if t["is_lens"] else np.nan for t in eval_truth])
    seeing = np.array([t["seeing_fwhm"] for t in eval_truth])
    threshold = np.quantile(p_eval[~lens_eval], 0.99)
    bright = lens_eval & (arc_snr >= 20)
    visible = bright & (theta_e >= 0.7 * seeing)
    deeplens = bright & (theta_e > 1.4)  # Lanusse+2018's quoted subset
    out = {
        "lenses_per_1000_inspections_random": rate["random"],
        "lenses_per_1000_inspections_skyloop": rate["skyloop"],
        # with no random find, half a find stands in for it (the gain is then a lower bound, and says so)
        "discovery_gain": rate["skyloop"] / max(rate["random"], 500.0 / BUDGET),
        "discovery_gain_is_lower_bound": float(rate["random"] == 0),
        "lenses_found_random": float(runs["random"]["found"]),
        "lenses_found_skyloop": float(runs["skyloop"]["found"]),
        "cnn_completeness_at_99_rejection": _completeness_at_rejection(p_eval, lens_eval, 0.99),
        "cnn_completeness_at_99_rejection_arc_snr_ge_20": float((p_eval[bright] > threshold).mean()),
        "cnn_completeness_at_99_rejection_visible": float((p_eval[visible] > threshold).mean()),
        "cnn_eval_lenses_visible": float(visible.sum()),
        "cnn_completeness_at_99_rejection_deeplens_subset": float((p_eval[deeplens] > threshold).mean()),
        "cnn_eval_lenses_deeplens_subset": float(deeplens.sum()),
        "cnn_completeness_at_90_rejection": _completeness_at_rejection(p_eval, lens_eval, 0.90),
        "cnn_eval_lenses": float(lens_eval.sum()),
        "cnn_eval_non_lenses": float((~lens_eval).sum()),
        "final_purity_at_50_completeness": _purity_at_completeness(final_score, is_lens, 0.5),
        "final_purity_at_50_completeness_random": _purity_at_completeness(
            runs["random"]["log_odds"] + np.random.default_rng(0).random(len(is_lens)) * 1e-9, is_lens, 0.5),
    }
    for name, r in runs.items():
        detected = np.flatnonzero(r["log_odds"] >= math.log(DETECT / (1 - DETECT)))
        out[f"detected_purity_{name}"] = float(is_lens[detected].mean()) if len(detected) else 0.0
        out[f"subjects_inspected_{name}"] = float((r["votes"] > 0).sum())
        for reason, count in r["reasons"].items():
            out[f"retired_{reason}_{name}"] = float(count)
    return out


def _gold_truths() -> list[dict]:
    """Training subjects shown with feedback: simulated lenses (full truths) and known non-lenses."""
    _, lens_truth = simulate_lenses(n=N_GOLD, seed=SEED + 31)
    _, negative_truth = simulate_lenses(n=N_GOLD, seed=SEED + 31, lens=False)
    return lens_truth + negative_truth


def _plot(results_dir: Path, runs, p_eval, lens_eval, figures) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, curve_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    fpr, tpr = _roc(p_eval, lens_eval)
    roc_ax.plot(1 - fpr, tpr, color="C0")
    roc_ax.axvline(0.99, color="grey", ls=":")
    roc_ax.set(xlim=(0.9, 1.0), ylim=(0, 1.02), xlabel="rejection of non-lenses", ylabel="completeness (lenses)",
               title=f"lens CNN: {figures['cnn_completeness_at_99_rejection']:.2f} complete at 99% rejection")
    for name, colour in (("random", "C1"), ("skyloop", "C2")):
        curve_ax.plot(np.arange(1, BUDGET + 1), runs[name]["curve"], color=colour,
                      label=f"{name}: {figures[f'lenses_per_1000_inspections_{name}']:.1f} per 1000")
    curve_ax.axhline(figures["survey_lenses"], color="grey", ls=":", label="lenses in the survey")
    curve_ax.set(xlabel="volunteer inspections (gold included)", ylabel="lenses detected (P >= 0.95)",
                 title=f"discovery gain {figures['discovery_gain']:.1f}x at prevalence {figures['prevalence']:.3f}")
    curve_ax.legend()
    fig.tight_layout()
    fig.savefig(results_dir / "lenses.png", dpi=110)
    plt.close(fig)
