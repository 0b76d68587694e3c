"""Bulk inference: FITS files streamed from disk to MC-dropout scores."""

import numpy as np
import pytest
import torch

from mlcore.inference import iter_cutout_batches, score_fits_files
from mlcore.io import write_image_fits
from mlcore.models.image import BackboneConfig, ImageBackbone, QuestionHead

LAYOUT = [("T0", 3), ("T1", 2)]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backbone():
    return ImageBackbone(BackboneConfig(input_size=64, cpu_precision="fp32"), device=CPU)  # exact comparisons below


def _files(tmp_path, n=7):
    rng = np.random.default_rng(0)
    cubes = rng.normal(0.0, 1.0, (n, 3, 32, 32)).astype(np.float32)
    paths = []
    for i, cube in enumerate(cubes):
        paths.append(tmp_path / f"c{i}.fits")
        write_image_fits(paths[-1], cube, ("g", "r", "i"))
    return cubes, paths


def test_it_scores_files_in_input_order_and_reports_unreadable_ones(tmp_path, backbone):
    cubes, paths = _files(tmp_path)
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"not a fits file")
    torch.manual_seed(0)
    head = QuestionHead(backbone.dim, LAYOUT)
    scores = score_fits_files([*paths[:3], broken, *paths[3:]], backbone, head, LAYOUT, n_samples=4, batch_size=3)
    assert scores.paths == [str(p) for p in paths]
    assert [p for p, _ in scores.failed] == [str(broken)]
    np.testing.assert_allclose(scores.embeddings, backbone.embed(cubes), rtol=1e-4, atol=1e-5)
    assert scores.samples.shape == (7, 5, 4)
    np.testing.assert_allclose(scores.probs[:, :3].sum(axis=1), 1.0, atol=1e-5)
    assert scores.samples.std(axis=2).max() > 0  # dropout stayed on: the MC samples differ


def test_temperatures_soften_the_scores(tmp_path, backbone):
    _, paths = _files(tmp_path, n=4)
    torch.manual_seed(0)
    head = QuestionHead(backbone.dim, LAYOUT)
    plain = score_fits_files(paths, backbone, head, LAYOUT, n_samples=3)
    softer = score_fits_files(paths, backbone, head, LAYOUT, n_samples=3, temperatures={"T0": 5.0})
    assert (softer.probs[:, :3].max(axis=1) < plain.probs[:, :3].max(axis=1)).all()
    np.testing.assert_allclose(softer.probs[:, 3:], plain.probs[:, 3:], atol=1e-6)


def test_batches_keep_their_order_and_size(tmp_path):
    _, paths = _files(tmp_path, n=5)
    batches = list(iter_cutout_batches(paths, batch_size=2, io_workers=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [p for b in batches for p, _, _ in b] == [str(p) for p in paths]
    with pytest.raises(ValueError):
        list(iter_cutout_batches(paths, batch_size=0))


def test_the_fast_head_path_samples_the_same_distribution_as_generic_mc_dropout():
    from mlcore.inference import mc_head_probs
    from mlcore.predict import mc_dropout_probs, predict_probs

    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (50, 64)).astype(np.float32)
    torch.manual_seed(0)
    head = QuestionHead(64, LAYOUT, hidden=32, dropout=0.3)
    fast = mc_head_probs(head, x, LAYOUT, n_samples=400, device=CPU, seed=3)
    generic = mc_dropout_probs(head, x, LAYOUT, n_samples=400, device=CPU, seed=3)
    assert fast.shape == generic.shape == (50, 5, 400)
    np.testing.assert_allclose(fast.mean(axis=2), generic.mean(axis=2), atol=0.02)
    np.testing.assert_allclose(fast.std(axis=2).mean(), generic.std(axis=2).mean(), rtol=0.1)
    no_dropout = QuestionHead(64, LAYOUT, hidden=32, dropout=0.0)
    np.testing.assert_allclose(
        mc_head_probs(no_dropout, x, LAYOUT, n_samples=2, device=CPU)[:, :, 1],
        predict_probs(no_dropout, x, LAYOUT, device=CPU),
        atol=1e-6,
    )
