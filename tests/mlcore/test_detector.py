import math

import numpy as np
import pytest
import torch

from mlcore import detect_train
from mlcore.average_precision import interpolated_ap, mean_average_precision
from mlcore.checkpoints import load_checkpoint, save_checkpoint
from mlcore.detect_train import DetectorTrainConfig, train_detector
from mlcore.models.detector import (
    FIELD_CLASSES,
    NMS_IOU,
    TRAIL_PAD_PX,
    FieldDetector,
    detect,
    line_to_box,
    preprocess_fields,
    truth_objects,
)
from mlcore.simulate import fields

ONE_STAR = fields.FieldConfig(size=64, n_galaxies=(0, 0), n_stars=(1, 1), star_mag=(17.0, 17.5), trail_fraction=0.0)
SMALL = fields.FieldConfig(size=64, n_galaxies=(2, 4), n_stars=(1, 3), trail_fraction=0.5)
LAYOUT = [(name, 1) for name in FIELD_CLASSES]


@pytest.fixture(scope="module")
def small_fields():
    sims = fields.simulate_fields(4, seed=7, config=SMALL)
    cubes = np.stack([cube for cube, _ in sims])
    boxes, labels = [], []
    for cube, truth in sims:
        b, names, detectable = truth_objects(truth, cube.shape)
        boxes.append(b[detectable])
        labels.append([n for n, keep in zip(names, detectable, strict=True) if keep])
    return cubes, boxes, labels


@pytest.fixture(scope="module")
def trained(small_fields):
    torch.manual_seed(0)
    cubes, boxes, labels = small_fields
    seen = []
    config = DetectorTrainConfig(epochs=2, batch_size=2, warmup_steps=2)
    model = train_detector(cubes, boxes, labels, config, device=torch.device("cpu"), progress=lambda *a: seen.append(a))
    return model, seen


# ---------------------------------------------------------------- inputs and coordinates


def test_preprocessing_keeps_every_pixel_and_normalises_any_field_shape():
    rng = np.random.default_rng(0)
    cubes = rng.normal(5.0, 1.0, (2, 3, 40, 72)).astype(np.float32)  # sky level 5, not square
    cubes[0, :, 10, 20] = np.nan
    x = preprocess_fields(cubes)
    assert x.shape == (2, 3, 40, 72) and x.dtype == torch.float32 and torch.isfinite(x).all()
    # the sky is subtracted: pure noise sits near the stretch's zero, i.e. ImageNet's -mean/std
    assert abs(float(x[1, 1].median()) - (0.0 - 0.456) / 0.224) < 0.3


def test_a_stars_truth_box_holds_its_brightest_pixel_in_array_coordinates():
    cube, truth = fields.simulate_fields(1, seed=3, config=ONE_STAR)[0]
    boxes, labels, detectable = truth_objects(truth, cube.shape)
    assert labels == ["star"] and detectable.all()
    row, col = np.unravel_index(np.argmax(cube[1]), cube[1].shape)  # r band; y = row, x = column
    x, y, w, h = boxes[0]
    assert x <= col + 0.5 <= x + w and y <= row + 0.5 <= y + h


def test_a_trail_becomes_a_padded_box_clipped_to_the_field():
    assert line_to_box(10.0, 60.0, 30.0, 20.0, (3, 64, 64)) == (
        10.0 - TRAIL_PAD_PX,
        20.0 - TRAIL_PAD_PX,
        20.0 + 2 * TRAIL_PAD_PX,
        40.0 + 2 * TRAIL_PAD_PX,
    )
    x, y, w, h = line_to_box(0.0, 5.0, 64.0, 5.0, (64, 64))  # a horizontal satellite, edge to edge
    assert (x, w) == (0.0, 64.0) and h == 2 * TRAIL_PAD_PX


def test_flips_carry_the_boxes_with_the_pixels():
    image = torch.zeros(1, 3, 32, 48)
    image[0, :, 4:8, 30:40] = 1.0  # rows 4-7, columns 30-39 -> box x 30..40, y 4..8
    target = {"boxes": torch.tensor([[30.0, 4.0, 40.0, 8.0]]), "labels": torch.tensor([1])}
    for seed in range(8):
        flipped, (moved,) = detect_train._random_flips(image, [target], torch.Generator().manual_seed(seed))
        x1, y1, x2, y2 = moved["boxes"][0].int().tolist()
        lit = flipped[0, 0] > 0
        assert lit[y1:y2, x1:x2].all() and lit.sum() == (x2 - x1) * (y2 - y1)


def test_fields_are_not_resized_before_the_network():
    model = FieldDetector(LAYOUT, pretrained=False).eval()
    batch, _ = model.fcos.transform([torch.zeros(3, 64, 96)])
    assert batch.image_sizes == [(64, 96)] and batch.tensors.shape[-2:] == (64, 96)


# ---------------------------------------------------------------- training and inference


def test_detect_returns_boxes_labels_and_sorted_scores_per_field(trained, small_fields):
    model, _ = trained
    cubes, _, _ = small_fields
    found = detect(model, cubes[:3])
    assert len(found) == 3
    for item in found:
        n = len(item["scores"])
        assert item["boxes"].shape == (n, 4) and len(item["labels"]) == n
        assert set(item["labels"]) <= set(FIELD_CLASSES)
        assert np.all(np.diff(item["scores"]) <= 0) and np.all((item["scores"] >= 0) & (item["scores"] <= 1))
        if n:
            assert np.all(item["boxes"][:, 2:] >= 0)


def test_a_few_training_steps_report_finite_losses(trained):
    _, seen = trained
    assert [epoch for epoch, _, _ in seen] == [1, 2]
    for _, epochs, losses in seen:
        assert epochs == 2 and set(losses) == {"loss", "classification", "bbox_regression", "bbox_ctrness"}
        assert all(math.isfinite(v) for v in losses.values())


def saved_and_loaded(model: FieldDetector, directory):
    save_checkpoint(
        directory, model, kind="field_detector", model_config=model.model_config(), layout=model.layout, metrics={}
    )
    return load_checkpoint(directory)


def test_a_saved_detector_loads_and_detects_the_same(trained, small_fields, tmp_path):
    model, _ = trained
    cubes, _, _ = small_fields
    loaded, meta = saved_and_loaded(model, tmp_path / "det")
    assert meta["kind"] == "field_detector" and loaded.classes == list(FIELD_CLASSES)
    a, b = detect(model, cubes[:2]), detect(loaded, cubes[:2])
    for x, y in zip(a, b, strict=True):
        assert x["labels"] == y["labels"]
        np.testing.assert_allclose(x["boxes"], y["boxes"], atol=1e-4)


def test_training_refuses_unknown_labels_and_empty_boxes(small_fields):
    cubes, boxes, labels = small_fields
    with pytest.raises(ValueError, match="not among the classes"):
        train_detector(cubes[:1], [np.array([[1.0, 1.0, 5.0, 5.0]])], [["quasar"]])
    with pytest.raises(ValueError, match="positive width and height"):
        train_detector(cubes[:1], [np.array([[70.0, 1.0, 5.0, 5.0]])], [["star"]])  # wholly outside 64 x 64
    with pytest.raises(ValueError, match="box lists"):
        train_detector(cubes[:2], boxes[:1], labels[:1])


# ---------------------------------------------------------------- mAP


def _truth(boxes, labels, difficult=None):
    out = {"boxes": np.array(boxes, dtype=float), "labels": labels}
    if difficult is not None:
        out["difficult"] = np.array(difficult)
    return out


def _pred(boxes, labels, scores):
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": labels, "scores": np.array(scores)}


def test_all_point_interpolation_takes_the_precision_envelope():
    # ranked: TP, FP, TP with 2 objects -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert interpolated_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert interpolated_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)  # envelope lifts 0.5


def test_perfect_detections_score_one_and_misses_lower_recall():
    truths = [_truth([[0, 0, 10, 10], [20, 20, 5, 5]], ["galaxy", "star"])]
    perfect = [_pred([[0, 0, 10, 10], [20, 20, 5, 5]], ["galaxy", "star"], [0.9, 0.8])]
    result = mean_average_precision(perfect, truths, ["galaxy", "star", "trail"])
    assert result["map"] == 1.0 and result["ap"] == {"galaxy": 1.0, "star": 1.0, "trail": None}
    only_galaxy = [_pred([[0, 0, 10, 10]], ["galaxy"], [0.9])]
    assert mean_average_precision(only_galaxy, truths, ["galaxy", "star"])["map"] == 0.5


def test_a_ranked_false_positive_and_a_duplicate_cost_precision():
    truths = [_truth([[0, 0, 10, 10]], ["galaxy"]), _truth([[50, 50, 10, 10]], ["galaxy"])]
    preds = [
        _pred([[0, 0, 10, 10], [1, 0, 10, 10]], ["galaxy", "galaxy"], [0.9, 0.8]),  # TP, then its duplicate: FP
        _pred([[51, 50, 10, 10]], ["galaxy"], [0.7]),  # IoU 0.82: TP
    ]
    assert mean_average_precision(preds, truths, ["galaxy"])["ap"]["galaxy"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # the wrong class or a poor overlap (IoU 1/3) is no match
    assert mean_average_precision([_pred([[0, 0, 10, 10]], ["star"], [0.9])], truths[:1], ["galaxy"])["map"] == 0.0
    assert mean_average_precision([_pred([[5, 0, 10, 10]], ["galaxy"], [0.9])], truths[:1], ["galaxy"])["map"] == 0.0


def test_difficult_objects_are_neither_required_nor_penalised():
    truths = [_truth([[0, 0, 10, 10], [30, 30, 4, 4]], ["star", "star"], difficult=[False, True])]
    found_both = [_pred([[30, 30, 4, 4], [0, 0, 10, 10]], ["star", "star"], [0.95, 0.9])]
    found_one = [_pred([[0, 0, 10, 10]], ["star"], [0.9])]
    assert mean_average_precision(found_both, truths, ["star"])["map"] == 1.0
    assert mean_average_precision(found_one, truths, ["star"])["map"] == 1.0
    required = [{**truths[0], "difficult": np.array([False, False])}]
    assert mean_average_precision(found_one, required, ["star"])["map"] == 0.5


def test_a_new_detector_hands_its_inference_settings_to_fcos():
    model = FieldDetector([(name, 1) for name in FIELD_CLASSES], pretrained=False)
    assert model.fcos.nms_thresh == NMS_IOU == model.model_config()["nms_thresh"]
    assert (model.fcos.score_thresh, model.fcos.detections_per_img) == (
        model.config["score_thresh"],
        model.config["detections_per_img"],
    )


def test_a_saved_detector_keeps_the_nms_threshold_it_was_saved_with(tmp_path):
    torch.manual_seed(0)
    model = FieldDetector([(name, 1) for name in FIELD_CLASSES], pretrained=False, nms_thresh=0.5)
    loaded, _ = saved_and_loaded(model, tmp_path / "det")
    assert loaded.fcos.nms_thresh == 0.5 != NMS_IOU
