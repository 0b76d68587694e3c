"""The catalog's columns, in one place: name, type, unit, UCD and description of each.

A workflow's catalog has one row per subject. Column groups turn a ``Chunk`` of rows
(labeler.catalogs.chunks) into column arrays with numpy, never a Python step per cell, so 10^6
rows stay fast:

- identity: ``external_id``, ``subject_id``, ``ra``, ``dec``;
- per question ``Q`` (task key) and answer ``A`` (its label, slugged): ``Q_n_votes``,
  ``Q_A_frac`` (vote fractions), ``Q_A_post`` (skill-weighted posterior), ``Q_agreement``,
  ``Q_top`` (answer with the highest posterior), ``Q_expert`` (expert/gold answer, if any);
- retirement: ``status``, ``retirement_reason``, ``retired_at``, ``n_classifications``,
  ``flag_count``, ``needs_review``;
- model: ``model_version``, ``model_sha256``, ``model_in_training``, ``model_entropy``,
  ``model_bald`` and ``Q_A_model`` (mean MC-dropout probability);
- marks, per drawing tool ``T`` (``mark<i>_<type>``, e.g. ``mark0_box``): ``T_n`` consensus clusters and ``T_json``
  (the clusters as JSON, strongest first; boxes/lines in data-array pixels, mlcore.marks);
  absorbers also ``T_z_abs`` and ``T_log_nhi``, redshifts ``T_z``, of the best-supported cluster.

``Subject.truth`` is never read here: simulated truth must not leak into a published catalog.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from mlcore import tasktree
from mlcore.consensus import agreement as vote_agreement

if TYPE_CHECKING:  # chunks imports rows, which imports this module
    from labeler.catalogs.chunks import Chunk

NAN = float("nan")
SLUG_LENGTH = 24


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "str" | "bool" | "int32" | "int64" | "float32" | "float64"
    description: str
    unit: str = ""  # a VOUnit (also valid in FITS); "" for dimensionless or non-physical values
    ucd: str = ""
    width: int = 1  # strings: the longest value in characters (FITS and VOTable need it up front)


@dataclass
class Record:
    """One subject's row, as read from the database for COCO (labeler.catalogs.rows)."""

    subject_id: int
    external_id: str
    ra: float | None
    dec: float | None
    status: str
    classification_count: int
    flag_count: int
    needs_review: bool
    retired_at: datetime | None
    retirement_reason: str
    gold_answers: Mapping | None
    consensus: Mapping | None = None  # {"counts", "fractions", "posterior", "agreement", "marks"}
    prediction: Mapping | None = None  # {"number", "sha256", "probabilities", "entropy", "bald", "in_training"}
    metadata: Mapping = field(default_factory=dict)  # read only for COCO (image shape)
    data_file: str = ""


@dataclass(frozen=True)
class Widths:
    """Longest strings of the export (labeler.catalogs.rows.catalog_widths)."""

    external_id: int = 1
    retirement_reason: int = 1
    marks_json: int = 2


def slug(text: str, fallback: str) -> str:
    """A column-name fragment: lower-case letters, digits and underscores; never starts with a digit."""
    out = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()[:SLUG_LENGTH].strip("_")
    if not out:
        return fallback
    return f"q{out}" if out[0].isdigit() else out


class IdentityGroup:
    def __init__(self, widths: Widths):
        self.columns = [
            Column(
                "external_id",
                "str",
                "Identifier of the object in its source survey or file",
                "",
                "meta.id;meta.main",
                max(1, widths.external_id),
            ),
            Column("subject_id", "int64", "Skyloop subject id", "", "meta.id"),
            Column("ra", "float64", "Right ascension (ICRS)", "deg", "pos.eq.ra;meta.main"),
            Column("dec", "float64", "Declination (ICRS)", "deg", "pos.eq.dec;meta.main"),
        ]

    def values(self, chunk: Chunk) -> list:
        state = chunk.state
        return [
            state["external_id"],
            np.array(state["subject_id"], dtype="int64"),
            np.array(state["ra"], dtype="float64"),  # None (no position) becomes NaN
            np.array(state["dec"], dtype="float64"),
        ]


class QuestionGroup:
    """Consensus of one question: votes, fractions, posterior, agreement, top and expert answers."""

    def __init__(self, key: str, task: Mapping, prefix: str):
        self.key = key
        self.labels = [a["label"] for a in task["answers"]]
        self.answer_slugs = answer_slugs(self.labels)
        question = _short(task["question"])
        width = max(1, *(len(label) for label in self.labels))
        p = prefix
        self.columns = [Column(f"{p}_n_votes", "int32", f"Votes on {key}: {question}", "", "meta.number")]
        self.columns += [
            Column(f"{p}_{a}_frac", "float32", f"Share of {key} votes for '{label}'", "", "stat.value")
            for a, label in zip(self.answer_slugs, self.labels, strict=True)
        ]
        self.columns += [
            Column(
                f"{p}_{a}_post", "float32", f"Skill-weighted posterior P('{label}') on {key}", "", "stat.probability"
            )
            for a, label in zip(self.answer_slugs, self.labels, strict=True)
        ]
        self.columns += [
            Column(f"{p}_agreement", "float32", f"Agreement on {key}: 1 - entropy / log K of the vote fractions"),
            Column(
                f"{p}_top",
                "str",
                f"Answer to {key} with the highest posterior ('' without votes)",
                "",
                "meta.code.class",
                width,
            ),
            Column(f"{p}_expert", "str", f"Expert (gold) answer to {key} ('' if none)", "", "meta.code.class", width),
        ]

    def values(self, chunk: Chunk) -> list:
        k = len(self.labels)
        raw_counts = chunk.consensus_matrix("counts", self.key, k)
        counts = np.nan_to_num(raw_counts).astype("int64")
        fractions = chunk.vote_fractions(raw_counts).astype("float32")
        posterior = chunk.consensus_matrix("posterior", self.key, k).astype("float32")
        agreement = vote_agreement(raw_counts).astype("float32")  # as skill.agreement_of stored it
        n_votes = counts.sum(axis=1).astype("int32")
        ranked = np.where(np.isnan(posterior), fractions, posterior)
        best = np.argmax(np.nan_to_num(ranked, nan=-1.0), axis=1)
        choices = np.array([*self.labels, ""])  # index k: no answer
        top = choices[np.where(n_votes > 0, best, k)]
        expert = choices[chunk.gold_answers(self.key, k)]
        return [n_votes, *fractions.T, *posterior.T, agreement, top, expert]


class RetirementGroup:
    def __init__(self, widths: Widths):
        self.columns = [
            Column("status", "str", "active or retired", "", "meta.code.status", 7),
            Column(
                "retirement_reason",
                "str",
                "Why the subject retired ('' while active)",
                "",
                "meta.note",
                max(1, widths.retirement_reason),
            ),
            Column("retired_at", "str", "When it retired, UTC, ISO 8601 ('' while active)", "", "time.end", 20),
            Column("n_classifications", "int32", "Classifications of the subject in this workflow", "", "meta.number"),
            Column("flag_count", "int32", "Volunteers who flagged it for review", "", "meta.number"),
            Column(
                "needs_review", "bool", "Waiting for an expert: flagged, or model and crowd disagree", "", "meta.code"
            ),
        ]

    def values(self, chunk: Chunk) -> list:
        state = chunk.state
        retired_at = np.array(state["retired_at"], dtype="U19")  # "YYYY-MM-DD HH:MM:SS" UTC or ""
        iso = np.char.add(np.char.replace(retired_at, " ", "T"), "Z")
        return [
            state["status"],
            state["retirement_reason"],
            np.where(retired_at == "", "", iso),
            np.array(state["classification_count"], dtype="int32"),
            np.array(state["flag_count"], dtype="int32"),
            np.array(state["needs_review"], dtype="bool"),
        ]


class ModelGroup:
    """The newest activated model's prediction for each subject (labeler.catalogs.rows picks it)."""

    def __init__(self, tree: Mapping, prefixes: Mapping[str, str]):
        self.layout = tasktree.label_layout(tree)
        self.columns = [
            Column("model_version", "int32", "Model version of the prediction (0: none)", "", "meta.version"),
            Column("model_sha256", "str", "SHA-256 of that model's checkpoint ('' if none)", "", "meta.checksum", 64),
            Column("model_in_training", "bool", "The model was trained on this subject's votes", "", "meta.code"),
            Column("model_entropy", "float32", "Predictive entropy of the first question, nats", "", "stat.value"),
            Column("model_bald", "float32", "BALD mutual information summed over questions, nats", "", "stat.value"),
        ]
        for key, _ in self.layout:
            task = tree["tasks"][key]
            labels = [a["label"] for a in task["answers"]]
            self.columns += [
                Column(
                    f"{prefixes[key]}_{a}_model",
                    "float32",
                    f"Model probability of '{label}' on {key}",
                    "",
                    "stat.probability",
                )
                for a, label in zip(answer_slugs(labels), labels, strict=True)
            ]

    def values(self, chunk: Chunk) -> list:
        prediction = chunk.prediction
        out = [
            prediction["number"],
            prediction["sha256"],
            prediction["in_training"],
            prediction["entropy"].astype("float32"),
            prediction["bald"].astype("float32"),
        ]
        for key, k in self.layout:
            out += list(chunk.probability_matrix(key, k).astype("float32").T)
        return out


class MarksGroup:
    """Consensus marks of one drawing tool (layout of Consensus.marks: mlcore.marks)."""

    def __init__(self, index: int, tool: Mapping, widths: Widths):
        self.index = str(index)
        self.kind = tool["type"]
        p = f"mark{index}_{self.kind}"
        label = _short(tool["label"])
        self.columns = [Column(f"{p}_n", "int32", f"Consensus {self.kind} marks of '{label}'", "", "meta.number")]
        if self.kind == "absorber":
            self.columns += [
                Column(f"{p}_z_abs", "float64", "z_abs of the best-supported absorber (NaN: none)", "", "src.redshift"),
                Column(
                    f"{p}_log_nhi", "float32", "log10 N_HI of that absorber, N_HI in cm-2", "", "phys.columnDensity"
                ),
            ]
        elif self.kind == "redshift":
            self.columns.append(
                Column(f"{p}_z", "float64", "Best-supported redshift mark (NaN: none)", "", "src.redshift")
            )
        unit = "pixels of the data array" if self.kind in ("box", "line") else "z, log N_HI"
        self.columns.append(
            Column(
                f"{p}_json",
                "str",
                f"All consensus {self.kind} clusters as JSON ({unit})",
                "",
                "meta.note",
                max(2, widths.marks_json),
            )
        )

    def clusters(self, marks: Mapping | None) -> list[dict]:
        entry = (marks or {}).get(self.index) or {}
        if entry.get("type") != self.kind:  # the tree was edited: the old clusters belong to another tool
            return []
        return list(entry.get("clusters") or [])

    def values(self, chunk: Chunk) -> list:
        clusters = [self.clusters(marks) for marks in chunk.marks]
        out: list = [np.array([len(c) for c in clusters], dtype="int32")]
        first = [c[0] if c else {} for c in clusters]
        if self.kind == "absorber":
            out.append(np.array([f.get("z", NAN) for f in first], dtype="float64"))
            out.append(np.array([f.get("log_nhi", NAN) for f in first], dtype="float32"))
        elif self.kind == "redshift":
            out.append(np.array([f.get("z", NAN) for f in first], dtype="float64"))
        out.append([json.dumps(c, separators=(",", ":")) if c else "[]" for c in clusters])
        return out


def catalog_groups(tree: Mapping, widths: Widths) -> list:
    """Every column group of a workflow's catalog, in column order."""
    prefixes = question_prefixes(tree)
    groups: list = [IdentityGroup(widths)]
    groups += [QuestionGroup(key, tree["tasks"][key], prefixes[key]) for key, _ in tasktree.label_layout(tree)]
    groups.append(RetirementGroup(widths))
    groups.append(ModelGroup(tree, prefixes))
    spec = tree.get("marks") or {}
    groups += [MarksGroup(i, tool, widths) for i, tool in enumerate(spec.get("tools", []))]
    _check_unique([c for g in groups for c in g.columns])
    return groups


def catalog_columns(groups: Sequence) -> list[Column]:
    return [c for g in groups for c in g.columns]


def chunk_arrays(groups: Sequence, chunk: Chunk) -> dict[str, object]:
    """{column name: numpy array (numbers, bools, str) or list of str} for one chunk of rows."""
    arrays: dict[str, object] = {}
    for group in groups:
        for column, values in zip(group.columns, group.values(chunk), strict=True):
            arrays[column.name] = values
    return arrays


def question_prefixes(tree: Mapping) -> dict[str, str]:
    keys = [key for key, _ in tasktree.label_layout(tree)]
    return {key: slug(key, f"q{i}") for i, key in enumerate(keys)}


def answer_slugs(labels: Sequence[str]) -> list[str]:
    """One name fragment per answer; an empty or repeated slug falls back to ``a<index>``."""
    out: list[str] = []
    for i, label in enumerate(labels):
        name = slug(label, f"a{i}")
        out.append(f"a{i}" if name in out else name)
    return out


def _check_unique(columns: Sequence[Column]) -> None:
    """FITS compares column names without case: two names that differ only in case would clash."""
    seen: set[str] = set()
    for column in columns:
        if column.name.lower() in seen:
            raise ValueError(f"two catalog columns are both called {column.name!r}; rename a task or answer")
        seen.add(column.name.lower())


def _short(text: str, limit: int = 48) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
