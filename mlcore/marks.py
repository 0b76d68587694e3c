"""Drawn marks: the tool spec in a task tree, validation of what volunteers draw, and consensus.

The task tree's optional ``"marks"`` key names the drawing tools::

    {"instruction": "Draw a box round every galaxy and a line along every trail.",
     "tools": [{"type": "box", "label": "Galaxy", "help": "..."},
               {"type": "line", "label": "Asteroid or satellite trail"}],
     "max_marks": 50}

Tools are either image tools (``box``, ``line``) or spectrum tools (``absorber``,
``redshift``), never a mix. A classification's marks name their tool by index:

- box: ``{"tool", "x", "y", "width", "height"}`` (x = column, y = row of the data array,
  continuous, pixel (r, c) covering x in [c, c+1), y in [r, r+1); row 0 is the bottom);
- line: ``{"tool", "x1", "y1", "x2", "y2"}`` (a trail: either endpoint order means the same);
- absorber: ``{"tool", "z", "log_nhi"}`` (z_abs and log10 N_HI / cm^-2 of a DLA);
- redshift: ``{"tool", "z"}``.

Consensus (``consensus_marks``) clusters each tool's marks over all classifications of a
subject, as Zooniverse's aggregation does for drawn shapes (aggregation-for-caesar,
``shape_reducer_dbscan`` with its IoU metric and "symmetric" shapes): DBSCAN (Ester et al.
1996, scikit-learn) on a precomputed distance -- 1 - IoU for boxes, the endpoint distance
in the better of the two endpoint orders for lines, |dz| / (1 + z) for absorbers and
redshifts. Each volunteer counts once per cluster (their marks in it are averaged first),
and a cluster needs ``min_support`` distinct volunteers. ``Consensus.marks`` is::

    {"<tool index>": {"type": "box", "label": "Galaxy", "n_marks": 37, "min_support": 2,
                      "clusters": [{"x", "y", "width", "height", "support", "spread", "iou"}, ...]},
     "<tool index>": {"type": "line", ..., "clusters": [{"x1", "y1", "x2", "y2", "support", "spread"}, ...]},
     "<tool index>": {"type": "absorber", ...,
                      "clusters": [{"z", "log_nhi", "support", "spread", "log_nhi_spread"}, ...]},
     "<tool index>": {"type": "redshift", ..., "clusters": [{"z", "support", "spread"}, ...]}}

``spread`` is in the mark's own units: pixels (median absolute deviation of box edges or
line endpoints around the consensus), or z (1.4826 x MAD, a robust sigma); ``iou`` is the
median IoU of the volunteers' boxes with the consensus box. Clusters are sorted by support.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

IMAGE_TOOLS = ("box", "line")
SPECTRUM_TOOLS = ("absorber", "redshift")
TOOL_KEYS: dict[str, tuple[str, ...]] = {
    "box": ("x", "y", "width", "height"),
    "line": ("x1", "y1", "x2", "y2"),
    "absorber": ("z", "log_nhi"),
    "redshift": ("z",),
}
SPEC_KEYS = frozenset({"instruction", "tools", "max_marks"})
TOOL_SPEC_KEYS = frozenset({"type", "label", "help"})
MAX_TOOLS = 12
MAX_LABEL, MAX_TEXT = 100, 2000
DEFAULT_MAX_MARKS, MAX_MAX_MARKS = 50, 500
MAX_COORD = 1e6  # pixels; anything larger is a broken client, not a drawing
Z_RANGE = (0.0, 7.0)
LOG_NHI_RANGE = (19.0, 23.0)  # sub-DLAs from 19, DLAs from 20.3 (Wolfe et al. 1986)

# Consensus tolerances.
BOX_MIN_IOU = 0.5  # boxes overlapping less are different objects
LINE_TOL_PX, LINE_TOL_FRAC = 4.0, 0.1  # endpoint distance allowed: 4 px + 10% of the length
Z_TOL = 5e-3  # |dz| / (1 + z) ~ 1500 km/s: clicks on a DLA trough thousands of km/s wide scatter this much
MIN_SUPPORT_FLOOR, MIN_SUPPORT_FRACTION = 2, 0.2
MAD_SIGMA = 1.4826  # MAD -> sigma for a Gaussian
MAX_CLUSTERED = 3000  # marks per tool and subject: the distance matrix grows as N^2 (3000: ~70 MB)


class MarksError(ValueError):
    """A marks spec or a list of marks does not follow the rules above."""


# ---------------------------------------------------------------- the spec


def validate_spec(spec: object) -> None:
    """Raise MarksError unless ``spec`` is a well-formed ``"marks"`` entry of a task tree."""
    if not isinstance(spec, Mapping):
        raise MarksError("'marks' must be an object with 'tools'")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise MarksError(f"'marks' has unknown keys: {sorted(map(str, unknown))}")
    instruction = spec.get("instruction", "")
    if not isinstance(instruction, str) or len(instruction) > MAX_TEXT:
        raise MarksError(f"'instruction' must be text of at most {MAX_TEXT} characters")
    max_marks = spec.get("max_marks", DEFAULT_MAX_MARKS)
    if not _is_int(max_marks) or not 1 <= max_marks <= MAX_MAX_MARKS:
        raise MarksError(f"'max_marks' must be an integer from 1 to {MAX_MAX_MARKS}")
    tools = spec.get("tools")
    if not _is_list(tools) or not 1 <= len(tools) <= MAX_TOOLS:
        raise MarksError(f"'tools' must be a list of 1 to {MAX_TOOLS} tools")
    for i, tool in enumerate(tools):
        _validate_tool(i, tool)
    types = {tool["type"] for tool in tools}
    if not (types <= set(IMAGE_TOOLS) or types <= set(SPECTRUM_TOOLS)):
        raise MarksError("tools must be all image tools (box, line) or all spectrum tools (absorber, redshift)")


def _validate_tool(i: int, tool: object) -> None:
    if not isinstance(tool, Mapping):
        raise MarksError(f"tool {i} must be an object")
    unknown = set(tool) - TOOL_SPEC_KEYS
    if unknown:
        raise MarksError(f"tool {i} has unknown keys: {sorted(map(str, unknown))}")
    if tool.get("type") not in TOOL_KEYS:
        raise MarksError(f"tool {i}: 'type' must be one of {list(TOOL_KEYS)}")
    label = tool.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        raise MarksError(f"tool {i} needs a 'label' of 1 to {MAX_LABEL} characters")
    if not isinstance(tool.get("help", ""), str) or len(tool.get("help", "")) > MAX_TEXT:
        raise MarksError(f"tool {i}: 'help' must be text of at most {MAX_TEXT} characters")


# ---------------------------------------------------------------- volunteers' marks


def validate_marks(spec: Mapping | None, marks: object, image_shape: Sequence[int] | None = None) -> list[dict]:
    """Return ``marks`` normalised (floats, clipped to the image) or raise MarksError.

    ``spec`` is the workflow's (already valid) ``"marks"`` entry, or None when it has no
    drawing tools, in which case only an empty list is accepted. ``image_shape`` is the
    subject's (B, H, W) or (H, W): boxes and lines are clipped to it, and refused when no
    part of them is inside.
    """
    if not _is_list(marks):
        raise MarksError("marks must be a list")
    if not spec:
        if marks:
            raise MarksError("this workflow has no drawing tools, so marks must be empty")
        return []
    limit = spec.get("max_marks", DEFAULT_MAX_MARKS)
    if len(marks) > limit:
        raise MarksError(f"at most {limit} marks are allowed, got {len(marks)}")
    bounds = _bounds(image_shape)
    return [_validate_mark(i, mark, spec["tools"], bounds) for i, mark in enumerate(marks)]


def _bounds(image_shape: Sequence[int] | None) -> tuple[float, float] | None:
    """(width, height) of the image in pixels, or None when unknown."""
    if image_shape is None or len(image_shape) < 2:
        return None
    height, width = image_shape[-2], image_shape[-1]
    return float(width), float(height)


def _validate_mark(i: int, mark: object, tools: Sequence[Mapping], bounds) -> dict:
    if not isinstance(mark, Mapping):
        raise MarksError(f"mark {i} must be an object")
    tool = mark.get("tool")
    if not _is_int(tool) or not 0 <= tool < len(tools):
        raise MarksError(f"mark {i}: 'tool' must be an integer in [0, {len(tools)})")
    kind = tools[tool]["type"]
    keys = TOOL_KEYS[kind]
    if set(mark) != {"tool", *keys}:
        raise MarksError(f"mark {i} ({kind}) must have exactly the keys {['tool', *keys]}")
    values = {key: _number(i, key, mark[key]) for key in keys}
    checker = {"box": _box, "line": _line, "absorber": _absorber, "redshift": _redshift}[kind]
    return {"tool": tool, **checker(i, values, bounds)}


def _number(i: int, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MarksError(f"mark {i}: {key!r} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise MarksError(f"mark {i}: {key!r} is out of range") from None
    if not math.isfinite(number) or abs(number) > MAX_COORD:
        raise MarksError(f"mark {i}: {key!r} must be a finite number of magnitude at most {MAX_COORD:g}")
    return number


def _box(i: int, v: dict, bounds) -> dict:
    if v["width"] <= 0 or v["height"] <= 0:
        raise MarksError(f"mark {i}: a box needs a positive width and height")
    x0, y0, x1, y1 = v["x"], v["y"], v["x"] + v["width"], v["y"] + v["height"]
    if bounds is not None:
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, bounds[0]), min(y1, bounds[1])
        if x1 <= x0 or y1 <= y0:
            raise MarksError(f"mark {i}: the box lies outside the image")
    return {"x": _px(x0), "y": _px(y0), "width": _px(x1 - x0), "height": _px(y1 - y0)}


def _line(i: int, v: dict, bounds) -> dict:
    p, q = (v["x1"], v["y1"]), (v["x2"], v["y2"])
    if math.dist(p, q) == 0:
        raise MarksError(f"mark {i}: a line needs two different endpoints")
    if bounds is not None:
        clipped = clip_segment(p, q, bounds)
        if clipped is None:
            raise MarksError(f"mark {i}: the line lies outside the image")
        p, q = clipped
    return {"x1": _px(p[0]), "y1": _px(p[1]), "x2": _px(q[0]), "y2": _px(q[1])}


def clip_segment(p, q, bounds) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The part of segment pq inside [0, W] x [0, H] (Liang & Barsky 1984), or None."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    lo, hi = 0.0, 1.0
    for step, room in ((-dx, p[0]), (dx, bounds[0] - p[0]), (-dy, p[1]), (dy, bounds[1] - p[1])):
        if step == 0:
            if room < 0:
                return None
            continue
        t = room / step
        if step < 0:
            lo = max(lo, t)
        else:
            hi = min(hi, t)
    if hi - lo <= 1e-9:
        return None
    return (p[0] + lo * dx, p[1] + lo * dy), (p[0] + hi * dx, p[1] + hi * dy)


def _absorber(i: int, v: dict, bounds) -> dict:
    _check_range(i, "z", v["z"], Z_RANGE)
    _check_range(i, "log_nhi", v["log_nhi"], LOG_NHI_RANGE)
    return {"z": round(v["z"], 5), "log_nhi": round(v["log_nhi"], 3)}


def _redshift(i: int, v: dict, bounds) -> dict:
    _check_range(i, "z", v["z"], Z_RANGE)
    return {"z": round(v["z"], 5)}


def _check_range(i: int, key: str, value: float, bounds: tuple[float, float]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise MarksError(f"mark {i}: {key!r} must be between {bounds[0]} and {bounds[1]}")


def _px(value: float) -> float:
    return round(float(value), 2)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


# ---------------------------------------------------------------- consensus


def default_min_support(n_classifications: int) -> int:
    """At least 2 volunteers, and at least a fifth of those who classified the subject."""
    return max(MIN_SUPPORT_FLOOR, math.ceil(MIN_SUPPORT_FRACTION * n_classifications - 1e-9))


def consensus_marks(
    spec: Mapping | None, classifications: Sequence[tuple[str, Sequence[Mapping]]], *, min_support: int | None = None
) -> dict:
    """Cluster every tool's marks over a subject's classifications (layout in the module docstring).

    Parameters
    ----------
    spec : the workflow's ``"marks"`` entry (None: no tools, returns ``{}``).
    classifications : ``[(volunteer_key, validated marks), ...]``, one per classification.
        Marks whose tool no longer exists or changed type (the tree was edited) are skipped.
    min_support : distinct volunteers a cluster needs; default ``default_min_support(n)``.

    At most MAX_CLUSTERED marks per tool are clustered (the earliest); ``n_marks`` counts all.
    """
    if not spec:
        return {}
    support = default_min_support(len(classifications)) if min_support is None else int(min_support)
    tools = spec["tools"]
    by_tool: dict[int, tuple[list[str], list[list[float]]]] = {i: ([], []) for i in range(len(tools))}
    for volunteer, marks in classifications:
        for mark in marks:
            index = mark.get("tool")
            if not _is_int(index) or not 0 <= index < len(tools):
                continue
            keys = TOOL_KEYS[tools[index]["type"]]
            if all(key in mark for key in keys):
                by_tool[index][0].append(volunteer)
                by_tool[index][1].append([float(mark[key]) for key in keys])
    out = {}
    for index, (volunteers, values) in by_tool.items():
        kind = tools[index]["type"]
        kept = values[:MAX_CLUSTERED]  # in classification order: the earliest volunteers' marks
        array = np.asarray(kept, dtype=float).reshape(len(kept), len(TOOL_KEYS[kind]))
        out[str(index)] = {
            "type": kind,
            "label": tools[index]["label"],
            "n_marks": len(values),
            "min_support": support,
            "clusters": cluster_marks(kind, array, volunteers[: len(kept)], min_support=support),
        }
    return out


def cluster_marks(kind: str, values: np.ndarray, volunteers: Sequence[str], *, min_support: int = 2) -> list[dict]:
    """Consensus marks of one tool.

    Parameters
    ----------
    kind : "box" | "line" | "absorber" | "redshift".
    values : (N, K) marks in ``TOOL_KEYS[kind]`` order.
    volunteers : (N,) who drew each mark.
    min_support : distinct volunteers a cluster needs.
    """
    if len(values) < max(min_support, 1):
        return []
    from sklearn.cluster import DBSCAN  # here, not at the top: importing scikit-learn takes ~2 s

    if kind == "box":
        values = _box_edges(values)  # (N, 4) x0, y0, x1, y1
        distance = 1.0 - box_iou(values, values)
        eps = 1.0 - BOX_MIN_IOU
    elif kind == "line":
        distance = line_distance(values) / _line_tolerance(values)
        eps = 1.0
    else:
        log1pz = np.log1p(values[:, 0])  # d ln(1+z) = dz / (1+z)
        distance = np.abs(log1pz[:, None] - log1pz[None, :])
        eps = Z_TOL
    labels = DBSCAN(eps=eps, min_samples=max(min_support, 1), metric="precomputed").fit_predict(distance)
    clusters = []
    for label in sorted(set(labels) - {-1}):
        members = np.flatnonzero(labels == label)
        per_volunteer = _one_per_volunteer(kind, values[members], [volunteers[m] for m in members])
        if len(per_volunteer) >= min_support:
            clusters.append(_summarise(kind, per_volunteer))
    return sorted(clusters, key=lambda c: -c["support"])


def _one_per_volunteer(kind: str, values: np.ndarray, volunteers: Sequence[str]) -> np.ndarray:
    """(V, K): each volunteer's marks in the cluster reduced to their median, so nobody votes twice."""
    groups: dict[str, list[int]] = defaultdict(list)
    for row, volunteer in enumerate(volunteers):
        groups[volunteer].append(row)
    if kind == "line":
        values = _orient_like(values, values[0])
    return np.stack([np.median(values[rows], axis=0) for rows in groups.values()])


def _summarise(kind: str, values: np.ndarray) -> dict:
    centre = np.median(values, axis=0)
    support = len(values)
    if kind == "box":
        x0, y0, x1, y1 = centre
        iou = box_iou(values, centre[None, :])[:, 0]
        return {
            "x": _px(x0),
            "y": _px(y0),
            "width": _px(x1 - x0),
            "height": _px(y1 - y0),
            "support": support,
            "spread": _px(np.median(np.abs(values - centre))),
            "iou": round(float(np.median(iou)), 3),
        }
    if kind == "line":
        if (centre[2], centre[3]) < (centre[0], centre[1]):  # canonical order: left endpoint first
            centre = centre[[2, 3, 0, 1]]
            values = values[:, [2, 3, 0, 1]]
        x1, y1, x2, y2 = centre
        return {
            "x1": _px(x1),
            "y1": _px(y1),
            "x2": _px(x2),
            "y2": _px(y2),
            "support": support,
            "spread": _px(np.median(np.abs(values - centre))),
        }
    z_spread = round(float(MAD_SIGMA * np.median(np.abs(values[:, 0] - centre[0]))), 5)
    out = {"z": round(float(centre[0]), 5), "support": support, "spread": z_spread}
    if kind == "absorber":
        out["log_nhi"] = round(float(centre[1]), 3)
        out["log_nhi_spread"] = round(float(MAD_SIGMA * np.median(np.abs(values[:, 1] - centre[1]))), 3)
    return out


def _box_edges(values: np.ndarray) -> np.ndarray:
    """(N, 4) x, y, width, height -> (N, 4) x0, y0, x1, y1."""
    return np.column_stack([values[:, 0], values[:, 1], values[:, 0] + values[:, 2], values[:, 1] + values[:, 3]])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of boxes given as (N, 4) and (M, 4) x0, y0, x1, y1."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def line_distance(lines: np.ndarray) -> np.ndarray:
    """(N, N) mean endpoint distance of (N, 4) segments x1, y1, x2, y2, in the better endpoint order."""
    p, q = lines[:, :2], lines[:, 2:]

    def dist(a, b):
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)

    same = (dist(p, p) + dist(q, q)) / 2
    swapped = (dist(p, q) + dist(q, p)) / 2
    return np.minimum(same, swapped)


def _line_tolerance(lines: np.ndarray) -> np.ndarray:
    """(N, N) allowed endpoint distance: a few pixels plus a share of the pair's mean length."""
    length = np.linalg.norm(lines[:, 2:] - lines[:, :2], axis=1)
    return LINE_TOL_PX + LINE_TOL_FRAC * (length[:, None] + length[None, :]) / 2


def _orient_like(lines: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Swap the endpoints of each (N, 4) line whose reversed order lies closer to ``reference``."""

    def gap(a, b):
        return np.linalg.norm(a - b, axis=1)

    forward = gap(lines[:, :2], reference[:2]) + gap(lines[:, 2:], reference[2:])
    backward = gap(lines[:, 2:], reference[:2]) + gap(lines[:, :2], reference[2:])
    return np.where((backward < forward)[:, None], lines[:, [2, 3, 0, 1]], lines)
