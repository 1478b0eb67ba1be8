"""Tests for lungmtl.data.resize."""

from __future__ import annotations

import numpy as np
from data_helpers import (
    FAST,
    label_masks,
    unit_slices,
)
from hypothesis import given
from hypothesis import strategies as st

from lungmtl.data.resize import resize


@FAST
@given(unit_slices, st.integers(8, 64))
def test_resize_image_shape_dtype_range(x, size):
    out = resize(x, size)
    assert out.shape == (size, size) and out.dtype == np.float32
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5


@FAST
@given(label_masks, st.integers(2, 64))
def test_resize_mask_keeps_dtype_and_label_set(mask, size):
    out = resize(mask, size, mask=True)
    assert out.shape == (size, size) and out.dtype == mask.dtype
    assert set(np.unique(out)) <= set(np.unique(mask))
    if size >= max(mask.shape):  # upsampling keeps every label
        assert set(np.unique(out)) == set(np.unique(mask))
