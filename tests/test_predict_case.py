"""One case's computation: masks pasted back into the crop box, the noise check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from predict_helpers import (
    FAST,
    BrightIsInfected,
    phantom_nifti,
)

from lungmtl.data.manifest import read_manifest
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.data.sources import load_slice
from lungmtl.predict import Predictor, predict
from lungmtl.predict.case import MIN_NEIGHBOUR_CORRELATION, neighbour_correlation


def test_cropped_runs_paste_the_mask_back_into_the_lung_box(tmp_path):
    stored, _ = phantom_nifti(tmp_path / "scan.nii.gz")
    predictor = Predictor(
        BrightIsInfected(), PreprocessConfig(size=64, crop="lungs"), torch.device("cpu"), "fake"
    )
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], tmp_path / "out", FAST, predictor=predictor)
    assert r.ok, r.message
    mask = np.asarray(nib.load(tmp_path / "out" / "scan" / "mask.nii.gz").dataobj).astype(bool)
    assert mask.shape == stored.shape
    truth = stored > -440
    # Inside the box the stand-in's mask is where it should be; outside it (the air corner with
    # the bright marker, most of the table) nothing is predicted.
    assert (mask & truth).sum() / mask.sum() > 0.9
    assert not mask[stored == 300.0].any()
    assert 0.3 * truth.sum() < mask.sum() < truth.sum()


@pytest.mark.realdata
def test_real_ct_slices_are_far_from_noise(real_data):
    for manifest in sorted(real_data.glob("*/manifest.csv")):
        table = read_manifest(manifest.parent)
        for _, row in table.iloc[np.linspace(0, len(table) - 1, 12).astype(int)].iterrows():
            r = neighbour_correlation(load_slice(row).image)
            assert r > 2 * MIN_NEIGHBOUR_CORRELATION, (row["image"], r)


def test_a_lung_crop_is_detected_and_predicted_and_a_lungless_slice_needs_assume_chest(tmp_path):
    """A slice cropped to its lungs (as medseg100 publishes them) keeps its lungs and is
    predicted, with the assumption in summary.json; a slice with no lung at all is refused
    unless the user says the inputs are chest CT."""
    from predict_helpers import FAST, bad_inputs, bright_predictor

    from lungmtl.data.lungmask import derive_lung_mask, looks_like_lung_crop
    from lungmtl.data.phantom import make_phantom_volume
    from lungmtl.predict import predict

    vol = make_phantom_volume(3, 6, 128)
    unit = np.clip((vol.hu[3] + 1000) / 1400, 0, 1)
    rows, cols = np.nonzero(vol.lung[3])
    crop = unit[rows.min() + 2 : rows.max() - 2, cols.min() + 2 : cols.max() - 2]
    assert not looks_like_lung_crop(unit) and looks_like_lung_crop(crop)
    assert derive_lung_mask(crop).mean() > 0.2
    np.save(tmp_path / "crop.npy", (crop * 1400 - 1000)[None].astype(np.float32))
    r = predict(None, [tmp_path / "crop.npy"], tmp_path / "o", FAST, predictor=bright_predictor())
    assert r[0].ok, r[0].message
    assert r[0].summary["assumed"] == {"lung_crop": True, "chest_ct_without_lung": False}
    _, no_lung, _ = bad_inputs(tmp_path)
    r = predict(None, [no_lung], tmp_path / "o2", FAST, predictor=bright_predictor())
    assert not r[0].ok and "--assume-chest" in r[0].message
    chest = FAST.__class__(**{**FAST.__dict__, "assume_chest": True})
    r = predict(None, [no_lung], tmp_path / "o3", chest, predictor=bright_predictor())
    assert r[0].ok and r[0].summary["assumed"]["chest_ct_without_lung"] is True
    assert any("--assume-chest" in w for w in r[0].summary["warnings"])


def test_medseg100_crops_are_predicted_not_refused(real_data, tmp_path):
    """medseg100 publishes slices cropped to the lungs (and upside down): each is predicted,
    its derived lung covers the crop, and summary.json says it was taken as a lung crop."""
    from predict_helpers import FAST, bright_predictor

    from lungmtl.predict import predict

    images = sorted((real_data / "medseg100" / "images").iterdir())[:6]
    results = predict(None, images, tmp_path / "o", FAST, predictor=bright_predictor(128))
    for r in results:
        assert r.ok, r.message
        assert r.summary["assumed"]["lung_crop"] is True
        lung = pd.read_csv(r.out_dir / "slices.csv")["lung_px"].iloc[0]
        assert lung > 0.2 * np.prod(r.summary["shape_zyx"][1:])
