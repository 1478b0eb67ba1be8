"""Tests for lungmtl.data.lungmask."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_helpers import (
    dice,
    read_gray,
)

from lungmtl.data import preprocess as P
from lungmtl.data.lungmask import derive_lung_mask, lung_box
from lungmtl.data.resize import resize


def test_derive_lung_mask_on_blank_slices_is_empty():
    assert not derive_lung_mask(np.zeros((32, 32), np.float32)).any()
    assert not derive_lung_mask(np.ones((32, 32), np.float32)).any()


# medseg-covid2's lung masks are stored rotated by 90 degrees relative to its images (its infection
# masks are aligned); np.rot90(k=-1) aligns them. Checked on all four volumes.
LUNG_MASK_FIX = {"medseg-covid2": lambda m: np.rot90(m, k=-1)}


def _lung_dice(root, source: str, n: int, min_fraction: float, seed: int = 0) -> np.ndarray:
    """Dice of derived vs reference lung masks at 224 px on ``n`` sampled slices of ``source``."""
    table = pd.read_csv(root / source / "manifest.csv")
    table = table[table["lung_mask"].notna()]
    rng = np.random.default_rng(seed)
    scores = []
    for i in rng.permutation(len(table)):
        if len(scores) == n:
            break
        row = table.iloc[i]
        ref = read_gray(root / source / row["lung_mask"]) > 0
        ref = LUNG_MASK_FIX.get(source, lambda m: m)(ref)
        if ref.mean() <= min_fraction or (min_fraction == 0 and not ref.any()):
            continue
        out = P.preprocess_slice(read_gray(root / source / row["image"]), "8bit")
        scores.append(dice(out.lung_mask, resize(ref, 224, mask=True)))
    return np.array(scores)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("source", ["covid19-ct-seg20", "medseg-covid2"])
def test_derived_lung_mask_matches_reference_masks(real_data, source):
    # Slices holding at least 1% lung: on thinner slivers (apex, bases) Dice is dominated by a
    # few hundred pixels and bowel gas or the trachea can outsize the lung (see the report).
    scores = _lung_dice(real_data, source, n=40, min_fraction=0.01)
    assert len(scores) == 40
    assert scores.mean() >= 0.9, f"{source}: mean Dice {scores.mean():.3f}"
    # Every non-empty slice, slivers included: a looser guard against regressions.
    all_scores = _lung_dice(real_data, source, n=40, min_fraction=0.0, seed=1)
    assert all_scores.mean() >= 0.85, f"{source}: mean Dice (all) {all_scores.mean():.3f}"


def test_crop_leaves_blank_and_already_cropped_slices_whole():
    assert lung_box(np.zeros((64, 80), np.float32)) == (0, 64, 0, 80)
    # A slice cropped to the lungs (no outside air at the border): never cropped further.
    x = np.full((120, 100), 0.8, np.float32)
    x[10:110, 5:45] = 0.1
    x[10:110, 55:95] = 0.1
    assert lung_box(x) == (0, 120, 0, 100)
    with pytest.raises(ValueError, match="crop"):
        P.PreprocessConfig(crop="body")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("source", ["covid19-ct-seg20", "medseg-covid2", "medseg100"])
def test_crop_never_cuts_infection_off_real_slices(real_data, source):
    table = pd.read_csv(real_data / source / "manifest.csv")
    table = table[table["mask"].notna()]
    cropped = 0
    for i in np.random.default_rng(0).permutation(len(table))[:25]:
        row = table.iloc[i]
        image = P.to_unit(read_gray(real_data / source / row["image"]), "8bit")
        mask = read_gray(real_data / source / row["mask"]) > 0
        r0, r1, c0, c1 = lung_box(image)
        assert mask[r0:r1, c0:c1].sum() == mask.sum(), f"{row['image']}: infection cut off"
        cropped += int((r1 - r0) * (c1 - c0) < 0.95 * mask.size)
    # Full field-of-view sources are cropped; MedSeg's slices (already cropped) are not.
    if source == "medseg100":
        assert cropped == 0
    else:
        assert cropped >= 10
