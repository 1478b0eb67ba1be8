"""The metric blocks of metrics.json (lungmtl.evaluation.blocks) and their report table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungmtl.evaluation.blocks import (
    classification_block,
    lesion_size_block,
    metric_block,
    patient_block,
    restrict_to_lung,
    slice_truth,
)
from lungmtl.evaluation.report import lesion_table


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


def test_slices_of_infected_studies_are_counted_and_scored_apart():
    """A MosMed-style infected study labels every slice, lesion or not: the headline counts
    them (as training does) and says how many; the slice-truth block leaves them out."""
    frame = pd.DataFrame(
        {
            "label_level": ["slice", "slice", "study", "study", "study", "study"],
            "label": ["infected", "healthy", "healthy", "healthy", "infected", "infected"],
            "y": [1, 0, 0, 0, 1, 1],
            "p_infected": [0.9, 0.2, 0.1, 0.3, 0.05, 0.8],  # a lesion-free slice of study s2
            "has_mask": [False] * 6,
            "pos": range(6),
            "source": ["a", "a", "m", "m", "m", "m"],
            "patient": ["p1", "p1", "s1", "s1", "s2", "s2"],
        }
    )
    assert slice_truth(frame).tolist() == [True, True, True, True, False, False]
    block = metric_block(frame, np.zeros((6, 4, 4)), np.zeros((6, 4, 4)))
    assert block["n_slices"] == 6 and block["n_study_infected"] == 2
    assert (block["n_infected"], block["n_healthy"]) == (3, 3)
    assert block["sensitivity"] == pytest.approx(2 / 3)
    strict = classification_block(frame[slice_truth(frame)])
    assert (strict["n_infected"], strict["n_healthy"]) == (1, 3)
    assert strict["sensitivity"] == 1.0 and strict["specificity"] == 1.0
    patients = patient_block(frame)  # the infected study counts as one infected patient
    assert patients["n_infected"] == 2 and patients["sensitivity"] == 1.0
