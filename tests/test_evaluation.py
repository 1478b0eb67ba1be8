"""Evaluation helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungmtl.evaluation import lesion_size_block, lesion_table, restrict_to_lung


def test_restrict_to_lung_keeps_the_lung_and_a_margin_only():
    prob = np.ones((2, 20, 20), np.float32)
    lungs = np.zeros((2, 20, 20), np.uint8)
    lungs[0, 5:10, 5:10] = 1
    out = restrict_to_lung(prob, lungs, margin=2)
    assert out[0, 5:10, 5:10].min() == 1.0  # lung kept
    assert out[0, 3, 7] == 1.0 and out[0, 11, 7] == 1.0  # within 2 px of it kept
    assert out[0, 2, 7] == 0.0 and out[0, 15, 15] == 0.0  # beyond the margin zeroed
    assert out[1].max() == 0.0  # no lung: nothing left
    assert out.dtype == prob.dtype


def test_dice_by_lesion_size_bins_infected_slices_with_a_mask():
    frame = pd.DataFrame(
        {
            "has_mask": [True, True, True, True, False, True],
            "lesion_share": [0.001, 0.004, 0.03, 0.5, 0.02, 0.0],
            "dice": [0.1, 0.3, 0.6, 0.9, 0.8, 1.0],
        }
    )
    rows = {r["lesion_share"]: r for r in lesion_size_block(frame)}
    assert list(rows) == ["0-0.5%", "0.5-1%", "1-2%", "2-5%", "5-10%", "10-100%"]
    assert rows["0-0.5%"]["n"] == 2 and rows["0-0.5%"]["dice_mean"] == pytest.approx(0.2)
    assert rows["2-5%"]["n"] == 1 and rows["2-5%"]["dice_median"] == pytest.approx(0.6)
    assert rows["1-2%"]["n"] == 0 and rows["1-2%"]["dice_mean"] is None  # no mask: not counted
    assert rows["10-100%"]["dice_mean"] == pytest.approx(0.9)
    assert sum(r["n"] for r in rows.values()) == 4  # healthy (empty) masks are not lesions
    assert "| 0-0.5% | 2 | 0.200 | 0.200 |" in lesion_table(list(rows.values()))
