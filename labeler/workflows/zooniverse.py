"""Zooniverse (Panoptes) workflows and annotations mapped to Skyloop's task trees and marks.

Pure functions on parsed JSON, no database. Panoptes workflow ``tasks`` look like::

    {"T0": {"type": "single", "question": "Smooth or features?",
            "answers": [{"label": "Smooth", "next": "T1"}, {"label": "Features"}]},
     "T1": {"type": "drawing", "instruction": "Box every galaxy",
            "tools": [{"type": "rectangle", "label": "Galaxy"}], "next": "T2"}, ...}

(newer exports keep the text in a separate ``strings`` column and put keys such as
``"T0.question"`` in ``tasks``; both are read). What maps, and what does not:

- ``single`` questions with 2 to 20 answers become Skyloop questions; each answer's ``next``
  skips over tasks Skyloop has no question for, to the next single question or the end;
- ``drawing`` tasks' ``rectangle`` and ``line`` tools become the tree's ``marks`` tools (box,
  line); Zooniverse measures y down from the top of the image, Skyloop up from the bottom;
- everything else (``multiple``, ``survey``, ``text``, ``slider``, ``combo``, ``shortcut``,
  point/ellipse/polygon tools...) is left out with a warning naming the task, and the
  volunteers' answers to it are not imported.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlcore import marks as marking
from mlcore import tasktree

TOOL_TYPES = {"rectangle": "box", "line": "line"}
IMPORT_MAX_MARKS = marking.MAX_MAX_MARKS
_IMAGE_MARKDOWN = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
# Classification client UUIDs are derived from Zooniverse's classification id, so a re-run stores nothing twice.
CLASSIFICATION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://www.zooniverse.org/classifications")


class ZooniverseError(ValueError):
    """The export cannot be imported; the message names the file, row and column where it can."""


@dataclass(frozen=True)
class VersionTasks:
    """One major version of a Zooniverse workflow: what each task key was and its labels."""

    kinds: dict[str, str]  # task key -> Panoptes type
    answers: dict[str, list[str]]  # single questions: raw answer labels in order
    tools: dict[str, list[tuple[str, str]]]  # drawing tasks: (raw label, Panoptes tool type) in order


@dataclass
class MappedWorkflow:
    """A Skyloop task tree built from the newest version, and how to translate any version's answers."""

    tree: dict
    answer_index: dict[str, dict[str, int]]  # task -> clean label -> answer index in ``tree``
    tool_index: dict[tuple[str, str, str], int]  # (task, clean tool label, Panoptes type) -> marks tool index
    warnings: list[str] = field(default_factory=list)


def clean_label(text: object) -> str:
    """A label as plain text: Markdown images are dropped (their alt text kept only when nothing else is left)."""
    text = str(text)
    plain = " ".join(_IMAGE_MARKDOWN.sub(" ", text).split())
    return plain or " ".join(" ".join(m.group(1) for m in _IMAGE_MARKDOWN.finditer(text)).split())


def version_tasks(tasks: Mapping, strings: Mapping) -> VersionTasks:
    """Task kinds and raw labels of one workflow version (``strings`` resolves translated keys)."""
    kinds, answers, tools = {}, {}, {}
    for key, task in tasks.items():
        kinds[key] = str(task.get("type", ""))
        if kinds[key] == "single":
            answers[key] = [_text(a.get("label", ""), strings) for a in task.get("answers") or []]
        elif kinds[key] == "drawing":
            tools[key] = [(_text(t.get("label", ""), strings), str(t.get("type", ""))) for t in task.get("tools") or []]
    return VersionTasks(kinds=kinds, answers=answers, tools=tools)


def map_workflow(*, name: str, tasks: object, first_task: object, strings: object) -> MappedWorkflow:
    """Build a valid Skyloop task tree from a Zooniverse version's ``tasks`` (raise ZooniverseError)."""
    if not isinstance(tasks, Mapping) or not all(isinstance(t, Mapping) for t in tasks.values()):
        raise ZooniverseError(f"workflow {name!r}: 'tasks' must be an object of task objects")
    strings = strings if isinstance(strings, Mapping) else {}
    warnings: list[str] = []
    questions = _questions(tasks, strings, warnings)
    marks_spec, tool_index = _marks_spec(tasks, strings, warnings)

    def next_question(key: object) -> str | None:
        seen = set()
        while key and key not in questions:
            if key in seen or key not in tasks:
                return None
            seen.add(key)
            task = tasks[key]
            only = task.get("answers") or [{}]
            key = task.get("next") if task.get("type") != "single" else only[0].get("next")
        return key or None

    first = next_question(first_task or next(iter(tasks), None))
    if first is None:
        raise ZooniverseError(
            f"workflow {name!r} has no single-answer question with 2 to {tasktree.MAX_ANSWERS} answers; "
            "Skyloop needs at least one"
        )
    tree_tasks = {}
    for key, (question, help_text, answers) in questions.items():
        tree_tasks[key] = {
            "question": question,
            "help": help_text,
            "answers": [{"label": label, "next": next_question(nxt)} for label, nxt in answers],
        }
    tree = {"first": first, "tasks": tree_tasks}
    if marks_spec:
        tree["marks"] = marks_spec
    try:
        tasktree.validate_tree(tree)
    except tasktree.TaskTreeError as exc:
        raise ZooniverseError(f"workflow {name!r} does not map to a valid task tree: {exc}") from exc
    answer_index = {key: _first_index([a["label"] for a in task["answers"]]) for key, task in tree_tasks.items()}
    return MappedWorkflow(tree=tree, answer_index=answer_index, tool_index=tool_index, warnings=warnings)


def _questions(tasks: Mapping, strings: Mapping, warnings: list[str]) -> dict[str, tuple[str, str, list]]:
    """Single-answer tasks Skyloop can ask: key -> (question, help, [(label, next)])."""
    out = {}
    for key in sorted(tasks, key=natural_key):
        task = tasks[key]
        kind = task.get("type")
        if kind == "drawing":
            continue
        answers = task.get("answers") or []
        if kind != "single":
            warnings.append(f"task {key} ({kind or 'no type'}) has no Skyloop equivalent; its answers are left out")
            continue
        if not 2 <= len(answers) <= tasktree.MAX_ANSWERS:
            warnings.append(
                f"task {key} has {len(answers)} answers (Skyloop questions need 2 to {tasktree.MAX_ANSWERS}); left out"
            )
            continue
        question = clean_label(_text(task.get("question", ""), strings)) or f"Question {key}"
        labels = [clean_label(_text(a.get("label", ""), strings)) or f"Answer {i}" for i, a in enumerate(answers)]
        out[str(key)] = (
            question,
            clean_label(_text(task.get("help", ""), strings)),
            [(label, a.get("next")) for label, a in zip(labels, answers, strict=True)],
        )
    return out


def _marks_spec(tasks: Mapping, strings: Mapping, warnings: list[str]) -> tuple[dict | None, dict]:
    """Rectangle and line tools of every drawing task, as one Skyloop marks spec."""
    tools, index, instructions = [], {}, []
    for key in sorted(tasks, key=natural_key):
        task = tasks[key]
        if task.get("type") != "drawing":
            continue
        instruction = clean_label(_text(task.get("instruction", task.get("question", "")), strings))
        if instruction:
            instructions.append(instruction)
        for i, tool in enumerate(task.get("tools") or []):
            kind = str(tool.get("type", ""))
            label = clean_label(_text(tool.get("label", ""), strings)) or f"Tool {i}"
            if kind not in TOOL_TYPES:
                warnings.append(f"task {key} tool {i} ({kind or 'no type'}) has no Skyloop equivalent; left out")
                continue
            index.setdefault((str(key), label, kind), len(tools))
            tools.append({"type": TOOL_TYPES[kind], "label": label[: marking.MAX_LABEL]})
    if not tools:
        return None, {}
    if len(tools) > marking.MAX_TOOLS:
        raise ZooniverseError(f"{len(tools)} drawing tools; Skyloop allows at most {marking.MAX_TOOLS}")
    spec = {"instruction": " ".join(instructions)[: marking.MAX_TEXT], "tools": tools, "max_marks": IMPORT_MAX_MARKS}
    return spec, index


def _text(value: object, strings: Mapping) -> str:
    text = str(value) if value is not None else ""
    return str(strings.get(text, text))


def natural_key(key: object) -> tuple:
    """T2 before T10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(key)))


def _first_index(labels: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, label in enumerate(labels):
        out.setdefault(label, i)
    return out


# ---------------------------------------------------------------- one classification


@dataclass
class MappedAnnotation:
    path: list[dict]  # [{"task", "answer"}] in the Skyloop tree
    marks: list[dict]  # Skyloop marks, y measured up from the bottom row
    dropped_steps: int = 0  # answers that no longer fit the newest tree
    dropped_marks: int = 0  # marks of unsupported tools, or of images of unknown height


def map_annotations(
    annotations: list, *, version: VersionTasks, mapped: MappedWorkflow, image_height: float | None, scale: float = 1.0
) -> MappedAnnotation:
    """Translate one classification's Panoptes annotations (any version) into the newest tree.

    Answers are matched by task key and answer label, so a version that reordered answers
    still counts right; steps and marks whose task, answer or tool no longer exist are
    dropped and counted. Marks are multiplied by ``scale`` (stored image pixels per pixel of
    the image Zooniverse showed) and flipped about ``image_height`` (stored rows); without a
    height they cannot be placed and are dropped. ``annotations`` is a list of objects.
    """
    out = MappedAnnotation(path=[], marks=[])
    for ann in annotations:
        task = str(ann.get("task"))
        kind = version.kinds.get(task)
        value = ann.get("value")
        if kind == "single":
            answer = _answer(task, value, version, mapped)
            if answer is None:
                out.dropped_steps += value is not None
            else:
                out.path.append({"task": task, "answer": answer})
        elif kind == "drawing" and isinstance(value, list):
            for mark in value:
                drawn = _mark(task, mark, version, mapped, image_height, scale)
                if drawn is None:
                    out.dropped_marks += 1
                else:
                    out.marks.append(drawn)
    return out


def _answer(task: str, value: object, version: VersionTasks, mapped: MappedWorkflow) -> int | None:
    index = mapped.answer_index.get(task)
    if index is None or value is None:
        return None
    labels = version.answers.get(task, [])
    if isinstance(value, int) and not isinstance(value, bool):  # older exports give the answer's index
        value = labels[value] if 0 <= value < len(labels) else None
    return index.get(clean_label(value)) if isinstance(value, str) else None


def _mark(
    task: str, mark: object, version: VersionTasks, mapped: MappedWorkflow, height: float | None, scale: float
) -> dict | None:
    if not isinstance(mark, Mapping) or height is None:
        return None
    tools = version.tools.get(task, [])
    tool = mark.get("tool")
    if not isinstance(tool, int) or isinstance(tool, bool) or not 0 <= tool < len(tools):
        return None
    label, kind = tools[tool]
    target = mapped.tool_index.get((task, clean_label(label) or f"Tool {tool}", kind))
    if target is None:
        return None
    try:
        if kind == "rectangle":
            x, y, w, h = (float(mark[k]) * scale for k in ("x", "y", "width", "height"))
            drawn = {"tool": target, "x": x, "y": height - y - h, "width": w, "height": h}
        else:
            x1, y1, x2, y2 = (float(mark[k]) * scale for k in ("x1", "y1", "x2", "y2"))
            drawn = {"tool": target, "x1": x1, "y1": height - y1, "x2": x2, "y2": height - y2}
    except (KeyError, TypeError, ValueError):
        return None
    return drawn


# ---------------------------------------------------------------- who and which


def volunteer_key(*, user_name: str, user_id: str, user_ip: str) -> str:
    """``zoo:<user id>`` for Zooniverse accounts, ``zoo-ip:<hashed ip>`` for not-logged-in volunteers.

    Zooniverse gives anonymous volunteers a user_name ``not-logged-in-<hash of their IP>`` and
    no user_id; the hashed IP is the best identity the export has for them.
    """
    if user_id.strip():
        return f"zoo:{user_id.strip()}"[:80]
    anonymous = user_ip.strip() or user_name.removeprefix("not-logged-in-").strip()
    if not anonymous:
        raise ValueError("neither user_id nor user_ip is set")
    return f"zoo-ip:{anonymous}"[:80]


def classification_uuid(classification_id: str) -> uuid.UUID:
    return uuid.uuid5(CLASSIFICATION_NAMESPACE, classification_id.strip())


def major_version(text: str) -> int:
    """``"14.18"`` -> 14 (Zooniverse bumps the major version when tasks change, the minor for wording)."""
    major = text.strip().split(".", 1)[0]
    if not major.isdigit():
        raise ValueError(f"expected a version like 14.18, got {text!r}")
    return int(major)


def retire_after(retirement: object, default: int) -> tuple[int, str | None]:
    """Skyloop's ``retire_after`` from Zooniverse's retirement JSON, and a warning when it cannot map."""
    if not isinstance(retirement, Mapping) or not retirement:
        return default, None
    criteria = retirement.get("criteria")
    options = retirement.get("options") or {}
    if criteria == "classification_count" and isinstance(options.get("count"), int) and options["count"] > 0:
        return options["count"], None
    if criteria == "never_retire":
        return 2**31 - 1, None
    return default, f"retirement {criteria!r} has no Skyloop equivalent; retire_after stays {default}"
