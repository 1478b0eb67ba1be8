"""A case's files: mask.nii.gz in the input's geometry (NIfTI, real DICOM), the staged writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from predict_helpers import (
    FAST,
    bright_predictor,
    phantom_nifti,
)

from lungmtl.metrics import dice
from lungmtl.predict import PredictOptions, predict


def test_nifti_mask_keeps_the_input_geometry(tmp_path):
    stored, affine = phantom_nifti(tmp_path / "scan.nii.gz")
    [r] = predict(
        "unused", [tmp_path / "scan.nii.gz"], tmp_path / "out", FAST, predictor=bright_predictor()
    )
    assert r.ok, r.message
    out = nib.load(tmp_path / "out" / "scan" / "mask.nii.gz")
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    mask = np.asarray(out.dataobj)
    assert mask.shape == stored.shape
    # The stand-in model marks pre-processed intensities >= 0.4 (about -440 HU and above).
    truth = stored > -440
    assert dice(mask, truth) > 0.9
    marker = stored == 300.0
    assert mask[marker].mean() > 0.8
    for axis in range(3):  # the test would notice a flipped mask
        assert np.flip(mask, axis)[marker].mean() < 0.2, axis
    s = r.summary
    voxel_ml = 1.2 * 1.1 * 4.0 / 1000
    assert s["infected_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-3)
    table = pd.read_csv(tmp_path / "out" / "scan" / "slices.csv")
    assert len(table) == stored.shape[2] and table["infected_px"].sum() == mask.sum()
    # The stand-in outlines the body's soft tissue, which lies outside the derived lung: a share
    # of lung would be a false 0%, so it is unknown on those slices and for the scan.
    outside = table["infected_px"] > 2 * table["lung_px"]
    assert s["lung_mask"] == "derived" and outside.any()
    assert table.loc[outside, "infected_percent_of_lung"].isna().all()
    assert set(table.loc[outside, "z"]) <= set(s["lung_share_unknown_slices"])


@pytest.mark.slow
@pytest.mark.realdata
def test_dicom_series_mask_lands_on_the_right_voxels(real_data, tmp_path):
    series = real_data / "covid-ct-md" / "P001"
    [r] = predict("unused", [series], tmp_path / "out", FAST, predictor=bright_predictor())
    assert r.ok, r.message
    img = nib.load(tmp_path / "out" / "P001" / "mask.nii.gz")
    mask = np.asarray(img.dataobj)
    assert mask.shape[0] == len(list(series.glob("*.dcm")))
    inv = np.linalg.inv(img.affine)
    # Independent of lungmtl's reader: pixel (row, col) of one DICOM file -> world (LPS -> RAS).
    ds = pydicom.dcmread(sorted(series.glob("*.dcm"))[40])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, hu.shape[0], 400), rng.integers(0, hu.shape[1], 400)
    lps = ipp + np.outer(cols * dc, iop[:3]) + np.outer(rows * dr, iop[3:])
    ras = lps * np.array([-1.0, -1.0, 1.0])
    vox = np.rint((inv[:3, :3] @ ras.T).T + inv[:3, 3]).astype(int)
    assert (vox >= 0).all() and (vox < np.array(mask.shape)).all()
    got = mask[vox[:, 0], vox[:, 1], vox[:, 2]].astype(bool)
    want = hu[rows, cols] > -440
    # Resampling to 64 px and back blurs edges; a wrong orientation agrees about half the time.
    assert (got == want).mean() > 0.9
    assert r.summary["spacing_mm"] is not None and r.summary["lung_ml"] > 100


def test_a_rerun_failing_halfway_leaves_no_summary_that_resume_would_trust(tmp_path, monkeypatch):
    phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    out = tmp_path / "out"
    opts = PredictOptions(device="cpu", gradcam=0, report=True)
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], out, opts, predictor=bright_predictor())
    assert r.ok and (out / "scan" / "summary.json").exists()
    stamp = (out / "scan" / "mask.nii.gz").stat().st_mtime_ns
    from lungmtl.predict import report

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_report", disk_full)  # after mask, slices, pictures
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], out, opts, predictor=bright_predictor())
    assert not r.ok and "No space left" in r.message
    assert not (out / "scan" / "summary.json").exists()  # the old one no longer vouches
    assert (out / "scan" / "mask.nii.gz").stat().st_mtime_ns == stamp  # nothing half-replaced
    assert sorted(p.name for p in (out / "scan").iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    resume = PredictOptions(device="cpu", gradcam=0, report=True, resume=True)
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], out, resume, predictor=bright_predictor())
    assert r.ok and r.message != "done before"
    assert (out / "scan" / "summary.json").exists() and (out / "scan" / "report.html").exists()
