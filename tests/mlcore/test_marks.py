import math

import numpy as np
import pytest

from mlcore import marks
from mlcore.tasktree import TaskTreeError, validate_tree

IMAGE_SPEC = {
    "instruction": "Draw a box round every galaxy and a line along every trail.",
    "tools": [{"type": "box", "label": "Galaxy"}, {"type": "line", "label": "Trail"}, {"type": "box", "label": "Star"}],
    "max_marks": 5,
}
SPECTRUM_SPEC = {"tools": [{"type": "absorber", "label": "DLA"}, {"type": "redshift", "label": "Quasar redshift"}]}
SHAPE = (3, 100, 200)  # (B, H, W): 200 px wide, 100 px high


def box(x, y, w, h, tool=0):
    return {"tool": tool, "x": x, "y": y, "width": w, "height": h}


def line(x1, y1, x2, y2, tool=1):
    return {"tool": tool, "x1": x1, "y1": y1, "x2": x2, "y2": y2}


# ---------------------------------------------------------------- spec


def test_it_accepts_a_tree_with_a_marks_spec():
    tree = {"first": "T0", "tasks": {"T0": {"question": "Usable?", "answers": [{"label": "Y"}, {"label": "N"}]}}}
    validate_tree({**tree, "marks": IMAGE_SPEC})
    validate_tree({**tree, "marks": SPECTRUM_SPEC})


@pytest.mark.parametrize(
    "spec",
    [
        None,
        [],
        {"tools": []},
        {"tools": [{"type": "circle", "label": "x"}]},
        {"tools": [{"type": "box", "label": ""}]},
        {"tools": [{"type": "box", "label": "Galaxy", "colour": "red"}]},
        {"tools": [{"type": "box", "label": "Galaxy"}, {"type": "absorber", "label": "DLA"}]},
        {"tools": [{"type": "box", "label": "Galaxy"}], "max_marks": 0},
        {"tools": [{"type": "box", "label": "Galaxy"}], "max_marks": True},
        {"tools": [{"type": "box", "label": "Galaxy"}], "extra": 1},
        {"tools": "box"},
    ],
)
def test_it_refuses_bad_specs_through_the_task_tree(spec):
    tree = {"first": "T0", "tasks": {"T0": {"question": "Q?", "answers": [{"label": "Y"}, {"label": "N"}]}}}
    with pytest.raises(TaskTreeError, match="marks"):
        validate_tree({**tree, "marks": spec})


# ---------------------------------------------------------------- validation


def test_it_normalises_marks_to_floats_and_keeps_their_tools():
    out = marks.validate_marks(IMAGE_SPEC, [box(10, 20, 5, 6), line(1, 2, 30, 40), box(0, 0, 1, 1, tool=2)], SHAPE)
    assert out == [
        {"tool": 0, "x": 10.0, "y": 20.0, "width": 5.0, "height": 6.0},
        {"tool": 1, "x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0},
        {"tool": 2, "x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0},
    ]
    assert all(isinstance(v, float) for m in out for k, v in m.items() if k != "tool")


def test_it_clips_boxes_and_lines_to_the_image():
    out = marks.validate_marks(IMAGE_SPEC, [box(-5, 90, 20, 30), line(-10, 50, 210, 50)], SHAPE)
    assert out[0] == {"tool": 0, "x": 0.0, "y": 90.0, "width": 15.0, "height": 10.0}
    assert out[1] == {"tool": 1, "x1": 0.0, "y1": 50.0, "x2": 200.0, "y2": 50.0}


def test_it_does_not_clip_when_the_shape_is_unknown():
    assert marks.validate_marks(IMAGE_SPEC, [box(-5, 90, 20, 30)])[0]["x"] == -5.0


@pytest.mark.parametrize(
    "bad, reason",
    [
        ([box(300, 10, 5, 5)], "outside"),
        ([box(10, -50, 5, 5)], "outside"),
        ([line(-10, -10, -1, -30)], "outside"),
        ([box(10, 10, 0, 5)], "positive"),
        ([box(10, 10, -3, 5)], "positive"),
        ([line(5, 5, 5, 5)], "different"),
        ([box(10, 10, 5, 5, tool=3)], "tool"),
        ([box(10, 10, 5, 5, tool=-1)], "tool"),
        ([box(10, 10, 5, 5, tool=True)], "tool"),
        ([box(10, 10, 5, 5, tool=1.0)], "tool"),
        ([{"tool": 0, "x": 1, "y": 1, "width": 1}], "keys"),
        ([{**box(1, 1, 2, 2), "colour": "red"}], "keys"),
        ([line(1, 1, 2, 2, tool=0)], "keys"),  # a line drawn with the box tool
        ([box(float("nan"), 1, 2, 2)], "finite"),
        ([box(float("inf"), 1, 2, 2)], "finite"),
        ([box(10**400, 1, 2, 2)], "range"),
        ([box(1e7, 1, 2, 2)], "finite"),
        ([box("10", 1, 2, 2)], "number"),
        ([box(True, 1, 2, 2)], "number"),
        ([box(None, 1, 2, 2)], "number"),
        ([box([1], 1, 2, 2)], "number"),
        ([box(1, 1, 2, 2)] * 6, "at most 5"),
        (["box"], "object"),
        ([[1, 2, 3]], "object"),
        ([None], "object"),
        ({"tool": 0}, "list"),
        ("[]", "list"),
        (None, "list"),
        (42, "list"),
    ],
)
def test_it_refuses_hostile_or_broken_marks_with_a_clear_error(bad, reason):
    with pytest.raises(marks.MarksError, match=reason):
        marks.validate_marks(IMAGE_SPEC, bad, SHAPE)


def test_it_checks_absorber_and_redshift_ranges():
    ok = marks.validate_marks(SPECTRUM_SPEC, [{"tool": 0, "z": 2.512345678, "log_nhi": 20.55}, {"tool": 1, "z": 3.1}])
    assert ok == [{"tool": 0, "z": 2.51235, "log_nhi": 20.55}, {"tool": 1, "z": 3.1}]
    for bad in ({"tool": 0, "z": 2.5, "log_nhi": 18.0}, {"tool": 0, "z": -0.1, "log_nhi": 20.5}, {"tool": 1, "z": 9}):
        with pytest.raises(marks.MarksError, match="between"):
            marks.validate_marks(SPECTRUM_SPEC, [bad])


def test_a_workflow_without_tools_accepts_only_no_marks():
    assert marks.validate_marks(None, []) == []
    with pytest.raises(marks.MarksError, match="no drawing tools"):
        marks.validate_marks(None, [box(1, 1, 2, 2)])


def test_it_survives_deeply_nested_json():
    nested: object = 0
    for _ in range(2000):
        nested = [nested]
    with pytest.raises(marks.MarksError):
        marks.validate_marks(IMAGE_SPEC, [{"tool": 0, "x": nested, "y": 1, "width": 1, "height": 1}], SHAPE)


# ---------------------------------------------------------------- consensus


TRUE_BOXES = np.array([[20.0, 30.0, 12.0, 10.0], [120.0, 60.0, 30.0, 18.0], [60.0, 10.0, 6.0, 6.0]])


def noisy_crowd(rng, n_good=12, n_spam=3, jitter=1.0, miss=0.15):
    """Volunteers who box each true object (jittered, sometimes missed) and spammers boxing at random."""
    crowd = []
    for v in range(n_good):
        drawn = []
        for x, y, w, h in TRUE_BOXES:
            if rng.random() < miss:
                continue
            dx0, dy0, dx1, dy1 = rng.normal(0, jitter * max(1.0, w / 10), 4)
            drawn.append(box(x + dx0, y + dy0, w + dx1 - dx0, h + dy1 - dy0))
        crowd.append((f"good-{v}", drawn))
    for v in range(n_spam):
        drawn = [box(*rng.uniform(0, 150, 2), *rng.uniform(3, 40, 2)) for _ in range(rng.integers(1, 6))]
        crowd.append((f"spam-{v}", drawn))
    return crowd


def test_box_clustering_recovers_known_boxes_from_a_noisy_crowd_with_spammers():
    rng = np.random.default_rng(3)
    crowd = noisy_crowd(rng)
    result = marks.consensus_marks(IMAGE_SPEC, crowd, min_support=4)
    clusters = result["0"]["clusters"]
    assert result["0"]["type"] == "box" and result["0"]["label"] == "Galaxy"
    assert len(clusters) == len(TRUE_BOXES)  # spam boxes are too scattered to form clusters
    found = np.array([[c["x"], c["y"], c["x"] + c["width"], c["y"] + c["height"]] for c in clusters])
    truth = np.column_stack([TRUE_BOXES[:, :2], TRUE_BOXES[:, :2] + TRUE_BOXES[:, 2:]])
    iou = marks.box_iou(truth, found)
    assert np.all(iou.max(axis=1) > 0.8)
    assert all(8 <= c["support"] <= 12 for c in clusters)
    assert all(c["iou"] > 0.6 and c["spread"] < 3 for c in clusters)
    assert result["1"]["clusters"] == [] and result["2"]["n_marks"] == 0


def test_a_volunteer_counts_once_per_cluster():
    same_person = [("a", [box(10, 10, 10, 10)] * 5)]
    assert marks.consensus_marks(IMAGE_SPEC, same_person, min_support=2)["0"]["clusters"] == []
    two = [("a", [box(10, 10, 10, 10)] * 3), ("b", [box(11, 10, 10, 10)])]
    (cluster,) = marks.consensus_marks(IMAGE_SPEC, two, min_support=2)["0"]["clusters"]
    assert cluster["support"] == 2


def test_default_min_support_grows_with_the_crowd():
    assert marks.default_min_support(1) == 2
    assert marks.default_min_support(5) == 2
    assert marks.default_min_support(40) == 8


def test_lines_cluster_whichever_way_they_were_drawn():
    rng = np.random.default_rng(0)
    crowd = []
    for v in range(8):
        p = np.array([10.0, 20.0]) + rng.normal(0, 1.5, 2)
        q = np.array([150.0, 80.0]) + rng.normal(0, 1.5, 2)
        if v % 2:
            p, q = q, p  # half the volunteers draw it from the other end
        crowd.append((f"v{v}", [line(*p, *q)]))
    crowd.append(("other", [line(100, 10, 110, 90)]))
    (cluster,) = marks.consensus_marks(IMAGE_SPEC, crowd, min_support=3)["1"]["clusters"]
    assert cluster["support"] == 8
    assert math.dist((cluster["x1"], cluster["y1"]), (10, 20)) < 2
    assert math.dist((cluster["x2"], cluster["y2"]), (150, 80)) < 2


def test_line_distance_is_symmetric_in_endpoint_order():
    lines = np.array([[0.0, 0.0, 10.0, 0.0], [10.0, 0.0, 0.0, 0.0], [0.0, 5.0, 10.0, 5.0]])
    d = marks.line_distance(lines)
    assert d[0, 1] == 0.0
    assert d[0, 2] == pytest.approx(5.0) and d[1, 2] == pytest.approx(5.0)


def test_absorber_clustering_gives_the_right_z_and_a_robust_column_density():
    rng = np.random.default_rng(1)
    z_true, nhi_true = 2.80, 20.7
    crowd = []
    for v in range(15):
        z = z_true + rng.normal(0, 0.002 * (1 + z_true))
        nhi = nhi_true + rng.normal(0, 0.1)
        if v < 3:
            nhi = 22.9  # slider dragged to the end
        crowd.append((f"v{v}", [{"tool": 0, "z": z, "log_nhi": nhi}]))
    crowd.append(("confused", [{"tool": 0, "z": 2.35, "log_nhi": 20.4}]))  # a forest line, alone
    result = marks.consensus_marks(SPECTRUM_SPEC, crowd, min_support=3)
    (cluster,) = result["0"]["clusters"]
    assert cluster["support"] == 15
    assert abs(cluster["z"] - z_true) / (1 + z_true) < 1.5e-3
    assert abs(cluster["log_nhi"] - nhi_true) < 0.15  # the mean would be ~21.1
    assert cluster["log_nhi_spread"] < 0.3


def test_redshift_marks_cluster_in_velocity_space():
    crowd = [(f"v{i}", [{"tool": 1, "z": 3.0 + d}]) for i, d in enumerate([0.0, 0.004, -0.003, 0.002])]
    crowd.append(("x", [{"tool": 1, "z": 2.2}]))
    (cluster,) = marks.consensus_marks(SPECTRUM_SPEC, crowd, min_support=2)["1"]["clusters"]
    assert cluster["support"] == 4 and abs(cluster["z"] - 3.001) < 0.002


def test_consensus_skips_marks_whose_tool_changed_or_vanished():
    crowd = [("a", [box(1, 1, 5, 5, tool=7), line(1, 1, 9, 9, tool=0)]), ("b", [])]
    result = marks.consensus_marks(IMAGE_SPEC, crowd)
    assert all(entry["n_marks"] == 0 for entry in result.values())
    assert marks.consensus_marks(None, crowd) == {}
