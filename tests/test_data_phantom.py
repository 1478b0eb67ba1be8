"""Tests for lungmtl.data.phantom: the synthetic CT volumes and the data set writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lungmtl.data.lungmask import derive_lung_mask
from lungmtl.data.manifest import MANIFEST_COLUMNS
from lungmtl.data.phantom import make_phantom_volume, write_phantom_dataset
from lungmtl.data.preprocess import to_unit


@pytest.fixture(scope="module")
def volume():
    return make_phantom_volume(7, n_slices=24, size=256, infected=True)


def test_same_seed_same_volume_other_seed_differs():
    a = make_phantom_volume(5, n_slices=6, size=64)
    b = make_phantom_volume(5, n_slices=6, size=64)
    c = make_phantom_volume(6, n_slices=6, size=64)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.multiclass, b.multiclass)
    assert not np.array_equal(a.hu, c.hu)
    generator = make_phantom_volume(np.random.default_rng(5), n_slices=6, size=64)
    np.testing.assert_array_equal(generator.hu, a.hu)


def test_shapes_dtypes_and_spacing(volume):
    assert volume.hu.shape == (24, 256, 256) and volume.hu.dtype == np.float32
    assert volume.infection.dtype == np.uint8 and volume.multiclass.dtype == np.uint8
    assert volume.lung.dtype == bool and volume.lung.shape == volume.hu.shape
    assert set(np.unique(volume.multiclass)) <= {0, 1, 2}
    np.testing.assert_array_equal(volume.infection, volume.multiclass > 0)
    assert len(volume.spacing) == 3 and all(s > 0 for s in volume.spacing)


def test_hu_ranges_by_tissue(volume):
    healthy_lung = volume.lung & (volume.infection == 0)
    assert -900 < np.median(volume.hu[healthy_lung]) < -780
    corner = volume.hu[:, :8, :8]  # outside the body
    assert abs(np.median(corner) + 1000) < 15 and 10 < corner.std() < 35  # air with ~20 HU noise
    assert -700 <= np.median(volume.hu[volume.multiclass == 1]) <= -300
    assert -130 <= np.median(volume.hu[volume.multiclass == 2]) <= 60
    assert volume.hu.max() > 400  # bone
    body = volume.hu[:, 128, 10:246]  # a row through the body below the lungs' widest part
    assert np.any((body > -150) & (body < 80))  # fat and soft tissue


def test_lesions_inside_lungs_and_on_some_slices_only(volume):
    assert not np.any(volume.infection.astype(bool) & ~volume.lung)
    per_slice = volume.infection.any(axis=(1, 2))
    assert per_slice.any() and not per_slice.all()
    assert (volume.multiclass == 2).any() or (volume.multiclass == 1).any()


def test_the_top_fifth_is_lesion_free_for_every_seed():
    """Shape noise can stretch a lesion past its z radius; it still stops below the top fifth
    (seed 26 of 24 x 64 px used to put a lesion on slice 4 with the healthy top at 0-4)."""
    for seed in range(30):
        v = make_phantom_volume(seed, n_slices=24, size=64, infected=True)
        first = int(np.ceil(0.2 * 24))
        assert not v.infection[:first].any(), seed


def test_healthy_volume_has_no_lesions():
    healthy = make_phantom_volume(7, n_slices=8, size=64, infected=False)
    assert not healthy.infection.any() and healthy.lung.any()


def test_lung_shape_changes_smoothly_along_z(volume):
    area = volume.lung.sum(axis=(1, 2)).astype(float)
    assert np.all(area > 0)
    assert np.max(np.abs(np.diff(area))) < 0.25 * area.max()  # no jumps between slices


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="n_slices"):
        make_phantom_volume(0, n_slices=2)


def test_derived_lung_mask_matches_phantom_lung(volume):
    scores = []
    for k in range(0, 24, 3):
        derived = derive_lung_mask(to_unit(volume.hu[k], "hu"))
        truth = volume.lung[k]
        scores.append(2 * (derived & truth).sum() / (derived.sum() + truth.sum()))
    assert min(scores) > 0.9, scores


def test_write_phantom_dataset(tmp_path):
    root = write_phantom_dataset(tmp_path / "ph", n_patients=4, n_slices=5, size=64, seed=1)
    table = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    assert tuple(table.columns) == MANIFEST_COLUMNS
    assert len(table) == 20 and table["patient"].nunique() == 4
    assert set(table["source"]) == {"phantom"} and set(table["label_level"]) == {"slice"}
    assert table["patient"].str.fullmatch(r"phantom-\d\d").all()
    by_patient = table.groupby("patient")["label"].apply(set)
    assert any("infected" in s for s in by_patient) and any(s == {"healthy"} for s in by_patient)
    for _, row in table.iterrows():
        image = np.load(root / row["image"])
        assert image.dtype == np.float32 and image.shape == (64, 64) and image.min() < -200
        mask = np.asarray(Image.open(root / row["mask"]))
        multi = np.asarray(Image.open(root / row["mask_multiclass"]))
        lung = np.asarray(Image.open(root / row["lung_mask"]))
        assert mask.shape == multi.shape == lung.shape == image.shape
        assert set(np.unique(mask)) <= {0, 255} and set(np.unique(lung)) <= {0, 255}
        assert set(np.unique(multi)) <= {0, 1, 2}
        assert row["label"] == ("infected" if mask.any() else "healthy")
    again = write_phantom_dataset(tmp_path / "ph2", n_patients=4, n_slices=5, size=64, seed=1)
    first = np.load(root / table["image"][7])
    np.testing.assert_array_equal(np.load(again / table["image"][7]), first)
