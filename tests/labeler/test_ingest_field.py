import numpy as np
import pytest
from django.core.management import CommandError, call_command

from labeler.subjects import storage
from labeler.subjects.models import Subject
from labeler.subjects.services import project_get_or_create
from labeler.workflows.models import SubjectState
from mlcore import io as fitsio
from mlcore.simulate import fields, sky

FIELD_CENTRE = (150.2, 2.3)


@pytest.fixture(scope="module")
def simulated_field():
    return fields.simulate_fields(1, seed=7)[0]  # (3, 256, 256) and its truth


def field_wcs():
    return sky.cutout_wcs(*FIELD_CENTRE, sky.SkyConfig(stamp_size=256))


def stored_files():
    root = storage.media_path("subjects")
    return sorted(root.rglob("*.fits")) if root.exists() else []


def test_a_field_becomes_a_field_subject_and_its_sources_cutouts_with_radec(small_sky, tmp_path, simulated_field):
    cube, truth = simulated_field
    path = tmp_path / "deep-field.fits"
    fitsio.write_image_fits(path, cube, ("g", "r", "i"), wcs=field_wcs())
    call_command("ingest_field", small_sky.slug, str(path))

    field = Subject.objects.get(project=small_sky, external_id="deep-field")
    assert field.metadata["role"] == "field" and field.metadata["shape"] == [3, 256, 256]
    assert field.ra == pytest.approx(FIELD_CENTRE[0], abs=1e-4) and field.dec == pytest.approx(
        FIELD_CENTRE[1], abs=1e-4
    )
    assert list(SubjectState.objects.filter(subject=field).values_list("workflow__kind", flat=True)) == ["field"]

    cutouts = list(Subject.objects.filter(project=small_sky, metadata__parent_field="deep-field"))
    assert len(cutouts) == field.metadata["n_sources"] >= 4
    states = SubjectState.objects.filter(subject__in=cutouts)
    assert set(states.values_list("workflow__kind", flat=True)) == {"image"} and states.count() == len(cutouts)
    wcs = field_wcs()
    bright = [b for b in truth["boxes"] if b["snr"] > 50]
    matched = 0
    for cutout in cutouts:
        meta = cutout.metadata
        assert meta["shape"] == [3, 64, 64] and meta["bands"] == ["g", "r", "i"]
        col, row = meta["cutout_origin"]
        stored = fitsio.read_image_fits(storage.media_path(cutout.data_file))
        assert np.array_equal(stored.cube, cube[:, row : row + 64, col : col + 64])
        # RA/Dec is the WCS position of the source (pixel centres on integers in WCS terms)
        ra, dec = wcs.all_pix2world([[meta["field_x"] - 0.5, meta["field_y"] - 0.5]], 0)[0]
        assert cutout.ra == pytest.approx(ra, abs=1e-7) and cutout.dec == pytest.approx(dec, abs=1e-7)
        # and it lands on a true object: bright ones are within a pixel or two of their box centre
        for box in bright:
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            if np.hypot(meta["field_x"] - centre[0], meta["field_y"] - centre[1]) < 3:
                matched += 1
    assert matched >= len(bright) - 1 > 0


def test_a_corrupt_or_nan_file_stops_the_batch_and_stores_nothing(small_sky, tmp_path, simulated_field):
    good = tmp_path / "good.fits"
    fitsio.write_image_fits(good, simulated_field[0], ("g", "r", "i"), wcs=field_wcs())
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T" + b"\x00" * 100)
    nan = tmp_path / "nan.fits"
    fitsio.write_image_fits(nan, np.full((3, 128, 128), np.nan, dtype=np.float32), ("g", "r", "i"))
    before_rows, before_files = Subject.objects.count(), stored_files()
    for bad in (corrupt, nan):
        with pytest.raises(CommandError, match=bad.name):
            call_command("ingest_field", small_sky.slug, str(good), str(bad))
    assert Subject.objects.count() == before_rows
    assert stored_files() == before_files


def test_it_refuses_a_project_without_a_field_workflow(db, tmp_path, simulated_field):
    project = project_get_or_create(slug="no-fields")
    path = tmp_path / "f.fits"
    fitsio.write_image_fits(path, simulated_field[0], ("g", "r", "i"))
    with pytest.raises(CommandError, match="no active field workflow"):
        call_command("ingest_field", project.slug, str(path))
    assert not Subject.objects.filter(project=project).exists()


def test_it_refuses_a_field_smaller_than_a_cutout(small_sky, tmp_path, simulated_field):
    path = tmp_path / "tiny.fits"
    fitsio.write_image_fits(path, simulated_field[0][:, :40, :40], ("g", "r", "i"))
    with pytest.raises(CommandError, match="smaller than the 64px cutouts"):
        call_command("ingest_field", small_sky.slug, str(path))
