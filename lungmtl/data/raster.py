"""Raster images (PNG, JPEG, TIFF): one grey channel.

Grey, RGB, RGBA and palette images become one luminance channel (ITU-R 601, alpha dropped), kind
``"8bit"``. 16-bit grey PNG/TIFF are min-max scaled to 0..255 per image (their HU offset is not
standardised, so HU cannot be recovered); use DICOM/NIfTI/.npy to keep HU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .image import check_finite


def read_raster(path: Path, *, labels: bool) -> np.ndarray:
    """One grey channel of a raster file: raw values for masks (``labels``), else 0..255."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here with the path attached
            if getattr(im, "n_frames", 1) > 1:
                warnings.warn(
                    f"{path}: multi-page image, only the first page is read", stacklevel=3
                )
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im)
            else:
                # RGB/RGBA/LA/P/1/CMYK -> luminance (ITU-R 601-2); alpha is ignored.
                arr = np.asarray(im if mode == "L" else im.convert("L"))
    except Image.DecompressionBombError as e:
        raise InputError(path, f"image too large to read safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot read image ({e})") from None
    if arr.ndim != 2:
        raise InputError(path, f"expected a 2D image, got shape {arr.shape}")
    check_finite(arr, path)
    if labels or arr.dtype == np.uint8:
        return arr
    if mode == "F":
        return arr.astype(np.float32)
    # 16-bit grey: min-max to 0..255 per image (documented in the module doc).
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
