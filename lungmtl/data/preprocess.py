"""Slice pre-processing: window, resize, enhance, lung mask, lung-relative normalisation.

Pure functions, arrays in and arrays out, no hidden state. The order applied by
:func:`preprocess_slice` is::

    to_unit -> [crop to the lungs] -> resize -> enhance -> lung mask -> normalise

The crop (``crop="lungs"``, off in the paper configs) is lungmtl's own addition: see
:func:`lungmtl.data.lungmask.lung_box`.

Intensities are float32 in [0, 1] after :func:`to_unit`: Hounsfield units are clipped to the lung
window and rescaled, 8-bit images are divided by 255 (they arrive already windowed by their source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage import filters

from lungmtl.errors import InputError

from .lungmask import derive_lung_mask, lung_box
from .resize import check_2d, resize

KINDS = ("hu", "8bit")
ENHANCE_STEPS = ("median", "opening")
LUNG_MASK_MODES = ("derived", "dataset")
CROP_MODES = ("none", "lungs")

# A lung mask smaller than this fraction of the slice is too small to estimate "healthy lung"
# intensity from (apex/base slices, failed derivation): normalisation then leaves the slice as is.
MIN_LUNG_FRACTION = 0.005


@dataclass(frozen=True)
class PreprocessConfig:
    """Pre-processing settings for one slice.

    Args:
        size: output side length in pixels (square output).
        window: (low, high) Hounsfield window for HU input; the lung window by default.
        enhance: enhancement steps in order, each "median" or "opening"; () for none.
        kernel: odd side length of the square median / opening footprint.
        normalise: scale intensities so that lung tissue reaches ``reference``.
        lung_mask: "derived" (always derive from the image, the default, so that every source and
            inference see the same normalisation) or "dataset" (use the dataset's lung mask where
            one is given, derive otherwise).
        reference: target median lung intensity after normalisation, on the [0, 1] scale.
            0.1 is where lung parenchyma (about -860 HU) falls in the default -1000..400 window,
            so HU input is left almost unchanged and 8-bit sources reach the same lung level.
        tissue_reference: target median intensity of the soft tissue outside the lungs (a
            second anchor that fixes the contrast); 0.75 is where soft tissue (about 40 HU)
            falls in the default window. ``None`` scales by the lung level alone, which leaves
            each 8-bit source its own contrast (docs/method.md, "Pre-processing").
        crop: "none" (the whole slice, as the paper) or "lungs": crop to a square box around
            the derived lungs before resizing (see :func:`lung_box`). The lungs then fill the
            model's input whatever the source's field of view (more pixels on the lesions, and
            no field-of-view or table cue for a classifier to learn the source from).
        crop_margin: margin added around the lungs' box, as a fraction of the slice side.
    """

    size: int = 224
    window: tuple[float, float] = (-1000.0, 400.0)
    enhance: tuple[str, ...] = ("median", "opening")
    kernel: int = 3
    normalise: bool = True
    lung_mask: str = "derived"
    reference: float = 0.1
    tissue_reference: float | None = 0.75
    crop: str = "none"
    crop_margin: float = 0.06

    def __post_init__(self) -> None:
        if not isinstance(self.size, int | np.integer) or self.size < 8:
            raise ValueError(f"size must be an integer >= 8, got {self.size!r}")
        _check_window(self.window)
        _check_steps(self.enhance)
        _check_kernel(self.kernel)
        if self.lung_mask not in LUNG_MASK_MODES:
            raise ValueError(
                f"unknown lung_mask mode {self.lung_mask!r}; valid: {', '.join(LUNG_MASK_MODES)}"
            )
        if not (np.isfinite(self.reference) and 0.0 < self.reference < 1.0):
            raise ValueError(f"reference must lie in (0, 1), got {self.reference!r}")
        tr = self.tissue_reference
        if tr is not None and not (np.isfinite(tr) and self.reference < tr <= 1.0):
            raise ValueError(f"tissue_reference must lie in (reference, 1], got {tr!r}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"unknown crop {self.crop!r}; valid: {', '.join(CROP_MODES)}")
        if not (np.isfinite(self.crop_margin) and 0.0 <= self.crop_margin <= 0.5):
            raise ValueError(f"crop_margin must lie in [0, 0.5], got {self.crop_margin!r}")


class Preprocessed(NamedTuple):
    """One pre-processed slice.

    Attributes:
        image: float32 (S, S), in [0, 1].
        mask: uint8 (S, S) binary infection mask (0/1), or None where none was given.
        mask_multiclass: uint8 (S, S) labels (0 background, 1 ground-glass, 2 consolidation),
            or None.
        lung_mask: bool (S, S), the lung mask used for normalisation.
        box: (row0, row1, col0, col1), the part of the input slice that was resized to (S, S)
            (the whole slice unless ``crop="lungs"``); :func:`paste_back` maps maps back.
    """

    image: np.ndarray
    mask: np.ndarray | None
    mask_multiclass: np.ndarray | None
    lung_mask: np.ndarray
    box: tuple[int, int, int, int]


def _check_window(window: Sequence[float]) -> None:
    if (
        len(window) != 2
        or not all(np.isfinite(v) for v in window)
        or not float(window[0]) < float(window[1])
    ):
        raise ValueError(
            f"window must be two finite numbers (low, high) with low < high, got {window!r}"
        )


def _check_steps(steps: Sequence[str]) -> None:
    if isinstance(steps, str):
        raise ValueError(f"enhance must be a sequence of step names, not the string {steps!r}")
    for step in steps:
        if step not in ENHANCE_STEPS:
            raise ValueError(f"unknown enhance step {step!r}; valid: {', '.join(ENHANCE_STEPS)}")


def _check_kernel(kernel: int) -> None:
    if not isinstance(kernel, int | np.integer) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd integer >= 1, got {kernel!r}")


def to_unit(
    array: np.ndarray, kind: str, window: tuple[float, float] = (-1000.0, 400.0)
) -> np.ndarray:
    """Map a slice to float32 intensities in [0, 1].

    Args:
        array: 2-D slice, Hounsfield units (``kind="hu"``) or 0..255 grey levels (``kind="8bit"``).
        kind: "hu" (clip to ``window``, then rescale) or "8bit" (divide by 255; already windowed).
        window: (low, high) HU window, used for "hu" only.

    Returns:
        float32 array of the same shape, in [0, 1].
    """
    if kind not in KINDS:
        raise ValueError(f"unknown intensity kind {kind!r}; valid: {', '.join(KINDS)}")
    array = check_2d(array, "image")
    if kind == "hu":
        _check_window(window)
        low, high = float(window[0]), float(window[1])
        out = (np.clip(array.astype(np.float64), low, high) - low) / (high - low)
        return out.astype(np.float32)
    if array.min() < 0 or array.max() > 255:
        raise InputError(
            "image",
            f"8-bit slice has values outside 0..255 ({array.min()}..{array.max()}); "
            "is it Hounsfield units (kind='hu')?",
        )
    return (array.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def median_filter(x: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Median filter with a ``kernel`` x ``kernel`` square footprint (edges: nearest).

    Args:
        x: 2-D float image.
        kernel: odd footprint side.

    Returns:
        Filtered image, same shape and dtype.
    """
    _check_kernel(kernel)
    return ndimage.median_filter(x, size=kernel, mode="nearest")


def opening(x: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Grey-level morphological opening (erosion then dilation) with a square flat footprint.

    Removes bright details smaller than the footprint (noise specks); idempotent.

    Args:
        x: 2-D float image.
        kernel: odd footprint side.

    Returns:
        Opened image, same shape and dtype.
    """
    _check_kernel(kernel)
    return ndimage.grey_opening(x, size=(kernel, kernel), mode="nearest")


def enhance(
    x: np.ndarray, steps: Sequence[str] = ("median", "opening"), kernel: int = 3
) -> np.ndarray:
    """Apply enhancement steps in order ("median", "opening"; any sequence, () = unchanged).

    Args:
        x: 2-D float image.
        steps: step names, applied left to right.
        kernel: odd footprint side for every step.

    Returns:
        Enhanced image (the input itself when ``steps`` is empty).
    """
    _check_steps(steps)
    _check_kernel(kernel)
    ops = {"median": median_filter, "opening": opening}
    for step in steps:
        x = ops[step](x, kernel)
    return x


def tissue_level(x: np.ndarray, lung_mask: np.ndarray) -> float | None:
    """Median intensity of the soft tissue: pixels outside the lungs above the Otsu threshold
    that splits air and lung from tissue and bone. ``None`` when too few such pixels exist."""
    values = x[~lung_mask]
    if values.size < MIN_LUNG_FRACTION * x.size or np.ptp(values) < 1e-3:
        return None
    bright = values[values > filters.threshold_otsu(values)]
    return float(np.median(bright)) if bright.size >= MIN_LUNG_FRACTION * x.size else None


def normalise_lung(
    x: np.ndarray,
    lung_mask: np.ndarray,
    reference: float = 0.1,
    tissue_reference: float | None = 0.75,
) -> np.ndarray:
    """Map the median lung intensity to ``reference`` (and soft tissue to ``tissue_reference``).

    With two anchors the map is affine: lung median -> ``reference``, soft-tissue median (see
    :func:`tissue_level`) -> ``tissue_reference``; with ``tissue_reference=None``, or where no
    tissue level is found, it is multiplicative (air stays 0) with the lung anchor alone. The
    lung median is robust to the infected part of the lung (brighter, usually a minority), so
    no infection mask is needed, as at inference time. With a lung mask below
    ``MIN_LUNG_FRACTION`` of the slice, or a lung median of (almost) zero, the slice is returned
    unscaled. The result is clipped to [0, 1].

    Args:
        x: 2-D float image in [0, 1].
        lung_mask: bool mask of the same shape.
        reference: target median lung intensity, in (0, 1).
        tissue_reference: target soft-tissue intensity, in (reference, 1], or None.

    Returns:
        float32 image in [0, 1].
    """
    x = check_2d(x, "image")
    lung_mask = np.asarray(lung_mask, dtype=bool)
    if lung_mask.shape != x.shape:
        raise InputError("lung mask", f"shape {lung_mask.shape} differs from image shape {x.shape}")
    out = x.astype(np.float32)
    if lung_mask.sum() >= MIN_LUNG_FRACTION * x.size:
        level = float(np.median(out[lung_mask]))
        tissue = tissue_level(out, lung_mask) if tissue_reference is not None else None
        if tissue is not None and tissue - level > 0.05:
            gain = (tissue_reference - reference) / (tissue - level)
            out = np.float32(reference) + (out - np.float32(level)) * np.float32(gain)
        elif level > 1e-3:
            out = out * np.float32(reference / level)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def paste_back(
    maps: np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    shape: tuple[int, int],
    at_least: float | None = None,
) -> np.ndarray:
    """Map model-size maps (N, S, S) back to native slices (N, H, W) through their crop boxes.

    Bilinear inside each box, 0 outside it (the crop keeps the lungs, so nothing was predicted
    there). The inverse of the crop + resize of :func:`preprocess_slice`. With ``at_least``
    the result is the bool mask ``value >= at_least``, thresholded slice by slice (a 600-slice
    512 x 512 scan then never holds its full-size float map: 630 MB less at the peak).
    """
    import torch
    import torch.nn.functional as F

    maps = np.asarray(maps, dtype=np.float32)
    out = np.zeros((len(maps), *shape), dtype=np.float32 if at_least is None else bool)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        t = torch.from_numpy(np.ascontiguousarray(maps[k]))[None, None]
        value = F.interpolate(t, size=(r1 - r0, c1 - c0), mode="bilinear", align_corners=False)
        value = value[0, 0].numpy()
        out[k, r0:r1, c0:c1] = value if at_least is None else value >= at_least
    return out


def _mask_input(mask: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = check_2d(mask, what)
    if mask.shape != shape:
        raise InputError(what, f"shape {mask.shape} differs from image shape {shape}")
    return mask


def preprocess_slice(
    image: np.ndarray,
    kind: str,
    *,
    mask: np.ndarray | None = None,
    mask_multiclass: np.ndarray | None = None,
    lung_mask: np.ndarray | None = None,
    config: PreprocessConfig = PreprocessConfig(),  # frozen: a safe default
) -> Preprocessed:
    """Pre-process one slice and its masks: to_unit -> resize -> enhance -> lung mask -> normalise.

    Args:
        image: 2-D slice, HU or 8-bit grey levels (see ``kind``).
        kind: "hu" or "8bit".
        mask: optional infection mask (any non-zero = infected), same shape as ``image``.
        mask_multiclass: optional 0/1/2 label mask, same shape.
        lung_mask: optional dataset lung mask (non-zero = lung); used only with
            ``config.lung_mask == "dataset"``.
        config: pre-processing settings.

    Returns:
        :class:`Preprocessed` with image float32 (S, S) in [0, 1], mask uint8 0/1 or None,
        mask_multiclass uint8 or None, lung_mask bool (S, S).
    """
    unit = to_unit(image, kind, config.window)
    mask = _mask_input(mask, unit.shape, "mask")
    mask_multiclass = _mask_input(mask_multiclass, unit.shape, "mask_multiclass")
    lung_mask = _mask_input(lung_mask, unit.shape, "lung_mask")
    h, w = unit.shape
    box = lung_box(unit, config.crop_margin) if config.crop == "lungs" else (0, h, 0, w)
    if box != (0, h, 0, w):
        r0, r1, c0, c1 = box
        unit = unit[r0:r1, c0:c1]
        mask, mask_multiclass, lung_mask = (
            None if m is None else m[r0:r1, c0:c1] for m in (mask, mask_multiclass, lung_mask)
        )
    size = config.size
    x = enhance(resize(unit, size), config.enhance, config.kernel)
    if config.lung_mask == "dataset" and lung_mask is not None:
        lung = resize(np.asarray(lung_mask) != 0, size, mask=True)
    else:
        lung = derive_lung_mask(x)
    if config.normalise:
        x = normalise_lung(x, lung, config.reference, config.tissue_reference)
    else:
        x = np.clip(x, 0.0, 1.0).astype(np.float32)
    out_mask = None if mask is None else resize(mask != 0, size, mask=True).astype(np.uint8)
    out_multi = None
    if mask_multiclass is not None:
        if not np.isin(mask_multiclass, (0, 1, 2)).all():
            raise InputError(
                "mask_multiclass",
                "labels must be 0 (background), 1 (ground-glass), 2 (consolidation)",
            )
        out_multi = resize(mask_multiclass.astype(np.uint8), size, mask=True)
    return Preprocessed(x, out_mask, out_multi, lung, box)
