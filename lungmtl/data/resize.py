"""Resizing one 2-D slice (images bilinear, label masks nearest) and the check every slice
operation makes of its input."""

from __future__ import annotations

import numpy as np
from skimage import transform

from ..errors import InputError


def check_2d(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(what, f"expected a 2-D slice, got shape {array.shape}")
    if array.size == 0:
        raise InputError(what, "the slice is empty")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(what, "the slice contains NaN or infinite values")
    return array


def resize(array: np.ndarray, size: int, *, mask: bool = False) -> np.ndarray:
    """Resize a slice to ``size`` x ``size`` (aspect ratio is not kept, as in the paper).

    Args:
        array: 2-D image (float) or label mask (any integer or bool dtype).
        size: output side length.
        mask: True for label masks: nearest neighbour, dtype and label set kept (no new labels).

    Returns:
        (size, size) array: float32 for images (bilinear, Gaussian anti-aliasing when shrinking,
        which approximates area averaging), the input dtype for masks.
    """
    array = check_2d(array, "mask" if mask else "image")
    if array.shape == (size, size):
        return array.copy() if mask else array.astype(np.float32)
    if mask:
        # Index-based nearest neighbour at pixel centres: exact for any dtype, invents no labels.
        rows = np.minimum(
            ((np.arange(size) + 0.5) * array.shape[0] / size).astype(np.intp), array.shape[0] - 1
        )
        cols = np.minimum(
            ((np.arange(size) + 0.5) * array.shape[1] / size).astype(np.intp), array.shape[1] - 1
        )
        return array[np.ix_(rows, cols)]
    out = transform.resize(
        array.astype(np.float32),
        (size, size),
        order=1,
        mode="edge",
        anti_aliasing=size < max(array.shape),
        preserve_range=True,
    )
    return out.astype(np.float32)
