import numpy as np
import pytest

from mlcore import marks
from mlcore.simulate import fields
from mlcore.tasktree import validate_tree

SMALL = fields.FieldConfig(size=128, n_galaxies=(6, 10), n_stars=(3, 6))


@pytest.fixture(scope="module")
def sample():
    return fields.simulate_fields(6, seed=11, config=SMALL)


def test_it_is_deterministic_given_a_seed():
    (a, ta), (b, tb) = (
        fields.simulate_fields(1, seed=3, config=SMALL)[0],
        fields.simulate_fields(1, seed=3, config=SMALL)[0],
    )
    assert np.array_equal(a, b) and ta == tb


def test_fields_are_three_band_float32_cubes_with_sky_noise(sample):
    for cube, truth in sample:
        assert cube.shape == (3, 128, 128) and cube.dtype == np.float32 and np.isfinite(cube).all()
        assert truth["bands"] == ["g", "r", "i"]
        # most of the field is empty sky: its robust scatter is the configured sky sigma
        mad_sigma = 1.4826 * np.median(np.abs(cube - np.median(cube, axis=(1, 2), keepdims=True)), axis=(1, 2))
        assert np.allclose(mad_sigma, truth["sky_sigma"], rtol=0.2)


def test_truth_boxes_are_valid_marks_inside_the_field(sample):
    spec = {"tools": [{"type": "box", "label": "Galaxy"}, {"type": "box", "label": "Star"}], "max_marks": 500}
    for cube, truth in sample:
        assert truth["n_galaxies"] >= 6 and truth["n_stars"] >= 3
        drawn = [
            {"tool": 0 if b["label"] == "galaxy" else 1, **{k: b[k] for k in ("x", "y", "width", "height")}}
            for b in truth["boxes"]
        ]
        assert marks.validate_marks(spec, drawn, cube.shape) == drawn  # nothing needed clipping


def test_bright_objects_sit_inside_their_boxes_and_faint_ones_are_flagged(sample):
    bright = faint = 0
    for cube, truth in sample:
        sigma_r = truth["sky_sigma"][1]
        for box in truth["boxes"]:
            assert box["detectable"] == (box["snr"] >= 5.0)
            rows = slice(int(box["y"]), int(np.ceil(box["y"] + box["height"])))
            cols = slice(int(box["x"]), int(np.ceil(box["x"] + box["width"])))
            if box["snr"] > 100:
                assert cube[1, rows, cols].max() > 10 * sigma_r
                bright += 1
            faint += not box["detectable"]
    assert bright > 0 and faint > 0  # the sample spans both ends


def test_trails_are_drawn_along_their_truth_lines():
    config = fields.FieldConfig(size=128, n_galaxies=(0, 0), n_stars=(0, 0), trail_fraction=1.0)
    checked = 0
    for cube, truth in fields.simulate_fields(8, seed=2, config=config):
        assert truth["lines"], "every field was asked to carry a trail"
        assert truth["class"] == ("trail" if any(line["detectable"] for line in truth["lines"]) else "no_trail")
        for line in truth["lines"]:
            if line["label"] != "satellite" or line["snr"] < 30 or len(truth["lines"]) > 1:
                continue
            band = truth["bands"].index(line["band"])
            t = np.linspace(0.05, 0.95, 60)
            xs = (line["x1"] + t * (line["x2"] - line["x1"])).astype(int)
            ys = (line["y1"] + t * (line["y2"] - line["y1"])).astype(int)
            on = cube[band, ys, xs]
            # the mean along the truth line (x = column, y = row) is a > 4-sigma detection
            assert on.mean() > 4 * truth["sky_sigma"][band] / np.sqrt(t.size)
            checked += 1
    assert checked > 0


def test_the_field_tree_and_its_marks_are_valid():
    validate_tree(fields.FIELD_TREE)
    types = [tool["type"] for tool in fields.FIELD_TREE["marks"]["tools"]]
    assert "box" in types and "line" in types
    assert set(fields.CLASS_ANSWERS) == {"trail", "no_trail"}
