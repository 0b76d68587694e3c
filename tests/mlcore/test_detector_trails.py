"""The Radon trail finder of the field detector, and trails scored as segments."""

import numpy as np
import pytest

from mlcore.average_precision import line_recall
from mlcore.models.detector import FIELD_CLASSES, FieldDetector, detect, line_to_box
from mlcore.trails import find_trails
from tests.mlcore.synthetic_fields import add_ellipse, add_streak, segments
from tests.mlcore.synthetic_fields import noise as sky_noise

SIZE = 128


def noise(seed: int) -> np.ndarray:
    return sky_noise(seed, SIZE)


def add_blob(cube, x, y, peak, sigma):
    return add_ellipse(cube, x, y, peak, sigma, sigma)


def test_a_faint_satellite_is_found_end_to_end_in_its_one_band():
    truth = np.array([[10.0, 20.0, 110.0, 90.0]])
    cube = add_streak(noise(0), 2, truth[0, :2], truth[0, 2:], peak=1.0)  # 1 sigma per pixel at its peak
    found = find_trails(cube)
    assert found and found[0]["snr"] > 10
    assert line_recall([segments(found[:1])], [truth], [np.array([False])])["recall"] == 1.0


def test_an_asteroids_dashes_in_three_bands_are_one_trail():
    cube = noise(1)
    for band, start in enumerate((20.0, 50.0, 80.0)):  # 15 px dashes, 15 px gaps, one per exposure
        add_streak(cube, band, (start, 60.0), (start + 15.0, 60.0), peak=3.0)
    found = find_trails(cube)
    assert len(found) >= 1
    assert (
        line_recall([segments(found[:1])], [np.array([[20.0, 60.0, 95.0, 60.0]])], [np.array([False])])["recall"] == 1.0
    )


def test_noise_bright_stars_and_a_bleeding_star_are_not_trails():
    assert find_trails(noise(2)) == []
    cube = add_blob(noise(3), 40.0, 40.0, 200.0, 2.0)
    add_blob(cube, 90.0, 80.0, 30.0, 6.0)  # a bright, extended galaxy
    cube[:, 60:100, 20] = cube.max()  # a saturated star's column bleed: flat at full well
    assert find_trails(cube) == []


def test_the_finder_refuses_a_cube_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        find_trails(np.zeros((SIZE, SIZE)))


def test_detect_reports_line_classes_as_found_segments_and_their_boxes():
    cube = add_streak(noise(4), 1, (5.0, 100.0), (120.0, 30.0), peak=2.0)
    model = FieldDetector([(c, 1) for c in FIELD_CLASSES], pretrained=False, line_classes=("trail",))
    (found,) = detect(model, cube[None])
    trails = [i for i, name in enumerate(found["labels"]) if name == "trail"]
    assert trails, "the streak is found whatever FCOS (untrained here) says"
    for i in trails:
        assert np.isfinite(found["lines"][i]).all()
        np.testing.assert_allclose(found["boxes"][i], line_to_box(*found["lines"][i], cube.shape))
    assert np.isnan(found["lines"][[i for i in range(len(found["labels"])) if i not in trails]]).all()
    assert np.all(np.diff(found["scores"]) <= 0)
    with pytest.raises(ValueError, match="line_classes"):
        detect(model, cube[None], line_classes=["quasar"])


def test_line_recall_matches_each_true_segment_once_within_the_volunteers_tolerance():
    true = [np.array([[0.0, 0.0, 100.0, 0.0], [0.0, 50.0, 20.0, 50.0]])]
    hard = [np.array([False, True])]
    found = [
        np.array([[101.0, 2.0, 1.0, 1.0], [0.0, 1.0, 99.0, 0.0], [0.0, 51.0, 20.0, 50.0], [50.0, 90.0, 90.0, 90.0]])
    ]
    result = line_recall(found, true, hard)
    # reversed endpoints still match; the duplicate and the far segment are false; the faint one is neither
    assert result == {"recall": 1.0, "n_required": 1, "n_found": 4, "false_per_image": 2.0}
    assert line_recall([np.zeros((0, 4))], true, hard)["recall"] == 0.0
    with pytest.raises(ValueError, match="found lists"):
        line_recall(found, true, [])
