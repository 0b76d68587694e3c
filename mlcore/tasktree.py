"""Decision trees of questions (Galaxy Zoo style) and the annotations that walk them.

A tree is plain JSON::

    {"first": "T0",
     "tasks": {"T0": {"question": "...", "help": "...",
                      "answers": [{"label": "Smooth", "next": "T1"},
                                  {"label": "Star or artefact", "next": null}]},
               "T1": {...}}}

An answer may carry ``"blank": true`` ("nothing here"): unanimous blank votes retire a
subject early. An annotation is the path a volunteer took: ``[{"task": "T0", "answer": 0}, ...]``.
An optional top-level ``"marks"`` key lists drawing tools (boxes and lines on images,
absorbers and redshifts on spectra); ``mlcore.marks`` defines and validates it.
Vote counts are ``{task: [count per answer]}``. The label layout (question order and
answer counts) is what models are trained on; it follows the order of ``tasks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mlcore import marks

MAX_TASKS = 64
MAX_ANSWERS = 20


class TaskTreeError(ValueError):
    """A task tree or an annotation does not follow the rules above."""


def validate_tree(tree: object) -> None:
    """Raise TaskTreeError unless ``tree`` is a well-formed, acyclic decision tree."""
    if not isinstance(tree, Mapping):
        raise TaskTreeError("task tree must be an object with 'first' and 'tasks'")
    tasks = tree.get("tasks")
    first = tree.get("first")
    if not isinstance(tasks, Mapping) or not tasks:
        raise TaskTreeError("'tasks' must be a non-empty object")
    if len(tasks) > MAX_TASKS:
        raise TaskTreeError(f"at most {MAX_TASKS} tasks are allowed")
    if first not in tasks:
        raise TaskTreeError(f"'first' must name one of the tasks, got {first!r}")
    for key, task in tasks.items():
        _validate_task(key, task, tasks)
    _check_acyclic(tree)
    if "marks" in tree:
        try:
            marks.validate_spec(tree["marks"])
        except marks.MarksError as exc:
            raise TaskTreeError(f"marks: {exc}") from exc


def _validate_task(key: str, task: object, tasks: Mapping) -> None:
    if not isinstance(key, str) or not key:
        raise TaskTreeError("task keys must be non-empty strings")
    if not isinstance(task, Mapping):
        raise TaskTreeError(f"task {key!r} must be an object")
    if not isinstance(task.get("question"), str) or not task["question"].strip():
        raise TaskTreeError(f"task {key!r} needs a 'question' string")
    answers = task.get("answers")
    if not isinstance(answers, Sequence) or isinstance(answers, str) or not 2 <= len(answers) <= MAX_ANSWERS:
        raise TaskTreeError(f"task {key!r} needs between 2 and {MAX_ANSWERS} answers")
    for i, answer in enumerate(answers):
        if not isinstance(answer, Mapping) or not isinstance(answer.get("label"), str):
            raise TaskTreeError(f"answer {i} of task {key!r} needs a 'label' string")
        if not isinstance(answer.get("blank", False), bool):
            raise TaskTreeError(f"answer {i} of task {key!r}: 'blank' must be true or false")
        nxt = answer.get("next")
        if nxt is not None and nxt not in tasks:
            raise TaskTreeError(f"answer {i} of task {key!r} points to unknown task {nxt!r}")


def _check_acyclic(tree: Mapping) -> None:
    tasks = tree["tasks"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(key: str) -> None:
        if state.get(key) == 1:
            raise TaskTreeError(f"task tree has a cycle through {key!r}")
        if state.get(key) == 2:
            return
        state[key] = 1
        for answer in tasks[key]["answers"]:
            if answer.get("next") is not None:
                visit(answer["next"])
        state[key] = 2

    visit(tree["first"])


def validate_annotation(tree: Mapping, annotation: object) -> list[dict]:
    """Return the annotation normalised to ``[{"task", "answer"}]`` or raise TaskTreeError.

    The path must start at ``first``, follow each chosen answer's ``next`` and stop
    exactly where the tree ends.
    """
    if not isinstance(annotation, Sequence) or isinstance(annotation, str | bytes):
        raise TaskTreeError("annotation must be a list of {task, answer} steps")
    tasks = tree["tasks"]
    expected: str | None = tree["first"]
    path: list[dict] = []
    for i, step in enumerate(annotation):
        if expected is None:
            raise TaskTreeError(f"step {i} comes after the tree has ended")
        if not isinstance(step, Mapping):
            raise TaskTreeError(f"step {i} must be an object")
        if step.get("task") != expected:
            raise TaskTreeError(f"step {i} must answer task {expected!r}, got {step.get('task')!r}")
        answer = step.get("answer")
        n_answers = len(tasks[expected]["answers"])
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < n_answers:
            raise TaskTreeError(f"step {i}: answer must be an integer in [0, {n_answers})")
        path.append({"task": expected, "answer": answer})
        expected = tasks[expected]["answers"][answer].get("next")
    if expected is not None:
        raise TaskTreeError(f"annotation stops before the tree ends (task {expected!r} is unanswered)")
    return path


def path_for_answers(tree: Mapping, choose) -> list[dict]:
    """Walk the tree from ``first``, calling ``choose(task_key, n_answers) -> int`` at each task."""
    tasks = tree["tasks"]
    key: str | None = tree["first"]
    path = []
    while key is not None:
        answer = int(choose(key, len(tasks[key]["answers"])))
        path.append({"task": key, "answer": answer})
        key = tasks[key]["answers"][answer].get("next")
    return path


def label_layout(tree: Mapping) -> list[tuple[str, int]]:
    """``[(task_key, n_answers), ...]`` in tree order: the column layout of model outputs."""
    return [(key, len(task["answers"])) for key, task in tree["tasks"].items()]


def empty_counts(tree: Mapping) -> dict[str, list[int]]:
    return {key: [0] * n for key, n in label_layout(tree)}


def add_votes(counts: dict[str, list[int]], annotation: Sequence[Mapping]) -> dict[str, list[int]]:
    """Add one validated annotation to vote counts in place and return them."""
    for step in annotation:
        counts[step["task"]][step["answer"]] += 1
    return counts


def vote_fractions(counts: Mapping[str, Sequence[int]]) -> dict[str, list[float]]:
    """Fraction of votes per answer among those who reached each question (0s if nobody did)."""
    out = {}
    for key, row in counts.items():
        total = sum(row)
        out[key] = [c / total if total else 0.0 for c in row]
    return out
