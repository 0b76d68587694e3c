import numpy as np
import pytest
from django.core.management import CommandError, call_command

from labeler.subjects import storage
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState
from mlcore import io as fitsio
from mlcore.simulate import sky, spectra


def write_cutout(path, ra=150.0, dec=2.0, seed=0):
    cube, _ = sky.simulate_cutout("smooth_round", np.random.default_rng(seed))
    fitsio.write_image_fits(path, cube, ("g", "r", "i"), wcs=sky.cutout_wcs(ra, dec))
    return path


def stored_files():
    root = storage.media_path("subjects")
    return sorted(p for p in root.rglob("*.fits")) if root.exists() else []


def test_it_ingests_multiband_fits_with_radec_from_the_wcs(small_sky, tmp_path):
    files = [str(write_cutout(tmp_path / f"obj{i}.fits", ra=150 + i / 100, seed=i)) for i in range(3)]
    call_command("ingest_images", small_sky.slug, *files)
    subject = Subject.objects.get(external_id="obj1")
    assert subject.ra == pytest.approx(150.01, abs=1e-6) and subject.dec == pytest.approx(2.0, abs=1e-6)
    assert subject.metadata["bands"] == ["g", "r", "i"]
    assert SubjectState.objects.filter(subject=subject, workflow__kind="image").exists()


def test_a_corrupt_file_stops_the_batch_and_leaves_nothing_behind(small_sky, tmp_path):
    good = write_cutout(tmp_path / "good.fits")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\x00" * 100)
    before_rows, before_files = Subject.objects.count(), stored_files()
    with pytest.raises(CommandError, match="bad.fits"):
        call_command("ingest_images", small_sky.slug, str(good), str(bad))
    assert Subject.objects.count() == before_rows
    assert stored_files() == before_files


def test_an_all_nan_image_is_refused_with_the_reason(small_sky, tmp_path):
    path = tmp_path / "nan.fits"
    fitsio.write_image_fits(path, np.full((3, 32, 32), np.nan, dtype=np.float32), ("g", "r", "i"))
    with pytest.raises(CommandError, match="nan.fits"):
        call_command("ingest_images", small_sky.slug, str(path))


def test_it_ingests_sdss_style_spectra_with_their_redshift(small_sky, tmp_path):
    wave, flux, ivar, truth = spectra.simulate_quasar(np.random.default_rng(3))
    path = tmp_path / "spec-0001.fits"
    fitsio.write_sdss_spectrum(path, wave, flux, ivar, z=truth["z_qso"], ra=10.0, dec=-1.0)
    call_command("ingest_spectra", small_sky.slug, str(path))
    subject = Subject.objects.get(external_id="spec-0001")
    assert subject.kind == "spectrum"
    assert subject.metadata["z"] == pytest.approx(truth["z_qso"], rel=1e-5)
    assert SubjectState.objects.filter(subject=subject, workflow__kind="spectrum").exists()


def test_ingesting_the_same_name_twice_is_refused(small_sky, tmp_path):
    path = str(write_cutout(tmp_path / "twice.fits"))
    call_command("ingest_images", small_sky.slug, path)
    with pytest.raises(CommandError, match="already has"):
        call_command("ingest_images", small_sky.slug, path)


def test_an_unknown_project_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="no project"):
        call_command("ingest_images", "nope", str(tmp_path / "x.fits"))
