"""One case's computation: masks pasted back into the crop box, the noise check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
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
