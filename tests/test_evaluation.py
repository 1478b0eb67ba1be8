"""Evaluation helpers."""

from __future__ import annotations

import numpy as np

from lungmtl.evaluation import restrict_to_lung


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
