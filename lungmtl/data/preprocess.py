"""Slice pre-processing: window, resize, enhance, lung mask, lung-relative normalisation.

Pure functions, arrays in and arrays out, no hidden state (method.md, "Pre-processing"). The order
applied by :func:`preprocess_slice` is::

    to_unit -> [crop to the lungs] -> resize -> enhance -> lung mask -> normalise

The crop (``crop="lungs"``, off in the paper configs) is lungmtl's own addition: see
:func:`lung_box`.

Intensities are float32 in [0, 1] after :func:`to_unit`: Hounsfield units are clipped to the lung
window and rescaled, 8-bit images are divided by 255 (they arrive already windowed by their source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage import filters, measure, morphology, segmentation, transform

from lungmtl.errors import InputError

KINDS = ("hu", "8bit")
ENHANCE_STEPS = ("median", "opening")
LUNG_MASK_MODES = ("derived", "dataset")
CROP_MODES = ("none", "lungs")
_CROP_MIN_BORDER_AIR = 0.6  # crop only slices whose border is mostly outside air (full view)
_CROP_MIN_LUNG = 0.03  # crop only around a lung mask at least this large (fraction of the slice)
_CROP_WORK = 128  # side at which the crop's lung mask is derived (the box is coarse anyway)

# A lung mask smaller than this fraction of the slice is too small to estimate "healthy lung"
# intensity from (apex/base slices, failed derivation): normalisation then leaves the slice as is.
MIN_LUNG_FRACTION = 0.005

# Lung-mask derivation settings, tuned on the real lung masks of covid19-ct-seg20 and medseg-covid2
# (tests/test_preprocess.py measures them). Sizes are fractions of the slice area, so they hold at
# any resolution.
_SMOOTH_SIGMA = 0.5  # Gaussian sigma (pixels per 256 px of side) against noise before thresholding
_MIN_AREA = 0.002  # a lung component covers at least this fraction of the slice
_SECOND_LUNG_RATIO = 0.05  # the second component must reach this fraction of the first
_EDGE_ALPHA = 0.3  # border growth threshold: this far from the Otsu threshold to the tissue mean
_EDGE_BAND = 2  # ... within this many pixels of the thresholded lung (partial-volume border)
_TRACHEA_AREA = 0.015  # compact midline air smaller than this is the trachea, not lung
_TRACHEA_SOLIDITY = 0.85
_MAX_HOLE = 0.03  # holes up to this fraction of the slice are filled (the heart is larger)


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
            falls in the default window. ``None`` scales by the lung level alone. The second
            anchor matters: 8-bit sources were windowed differently, and with the lung anchor
            alone the brightest tissue of a MosMed slice ends near 0.19 and of a HU slice near
            0.96, a per-source contrast a classifier can learn instead of the disease.
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


def _check_2d(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(what, f"expected a 2-D slice, got shape {array.shape}")
    if array.size == 0:
        raise InputError(what, "the slice is empty")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(what, "the slice contains NaN or infinite values")
    return array


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
    array = _check_2d(array, "image")
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
    array = _check_2d(array, "mask" if mask else "image")
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


def derive_lung_mask(unit_image: np.ndarray) -> np.ndarray:
    """Derive a lung mask from a windowed slice in [0, 1] (HU-derived or 8-bit).

    How: (1) Otsu threshold on the lightly smoothed slice, ignoring padding at the minimum value
    (outside the scanner's field of view), splits dark air/lung from body tissue; (2) dark regions
    connected to the image border are outside air and are removed; (3) compact midline air (the
    trachea) is dropped, and of the remaining components the largest one or two (the lungs) are
    kept, the second only when it reaches 5% of the first; (4) each lung grows by up to 2 pixels
    into its partial-volume rim, is closed with a disk (radius side/40) and has its holes up to 3%
    of the slice filled (not a mediastinum enclosed by touching lungs), so vessels and lesions
    (ground glass, consolidation: brighter than lung) inside or at the edge of the lung are
    included. Slices cropped to the lungs (all dark regions touch the border) keep
    the dark regions that do not touch all four edges.

    Known weak spots: slices holding a sliver of lung (apex, bases) where bowel gas or the trachea
    is larger than the lung, and a lung wholly consolidated (as bright as tissue).

    Args:
        unit_image: 2-D float slice in [0, 1], lung dark.

    Returns:
        bool array, same shape; all False when no lung-like region is found.
    """
    image = _check_2d(unit_image, "image").astype(np.float32)
    h, w = image.shape
    smooth = ndimage.gaussian_filter(image, sigma=_SMOOTH_SIGMA * max(1.0, min(h, w) / 256.0))
    lo = float(smooth.min())
    inside = smooth[smooth > lo + 0.02]
    values = inside if inside.size > 0.05 * smooth.size else smooth.ravel()
    if float(values.max()) - float(values.min()) < 1e-3:
        return np.zeros((h, w), dtype=bool)
    threshold = filters.threshold_otsu(values)
    bright = float(values[values >= threshold].mean())
    dark = smooth < threshold
    edge = smooth < threshold + _EDGE_ALPHA * (bright - threshold)
    keep = _lung_components(dark)
    radius = max(2, round(min(h, w) / 40))
    footprint = morphology.disk(radius)
    out = np.zeros((h, w), dtype=bool)
    pad = radius + _EDGE_BAND + 1
    for lung in keep:
        # Work in the lung's bounding box, padded so that growth and closing are not cut short by
        # the box or the image edge (cropped slices): same result as full-size, far cheaper.
        rows, cols = np.nonzero(lung)
        r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, h)
        c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, w)
        box = np.pad(lung[r0:r1, c0:c1], pad)
        box_edge = np.pad(edge[r0:r1, c0:c1], pad)
        # Otsu sits mid-way between lung and tissue, which leaves out the partial-volume rim the
        # reference masks include: grow into nearby pixels below a higher threshold.
        box |= ndimage.binary_dilation(box, iterations=_EDGE_BAND) & box_edge
        box = ndimage.binary_closing(box, structure=footprint)
        # Fill vessel and lesion holes, but not a mediastinum enclosed by two touching lungs.
        box = morphology.remove_small_holes(box, max_size=int(_MAX_HOLE * h * w))
        out[r0:r1, c0:c1] |= box[pad:-pad, pad:-pad]
    return out


def _lung_components(dark: np.ndarray) -> list[np.ndarray]:
    """Pick the one or two lung components out of a dark (air-like) binary map."""
    h, w = dark.shape
    min_area = _MIN_AREA * h * w
    labels = measure.label(segmentation.clear_border(dark), connectivity=1)
    regions = [r for r in measure.regionprops(labels) if r.area >= min_area]
    if not regions:
        # Slices cropped to the lungs: every dark region touches the border. Outside air of a
        # full field of view surrounds the body, so it touches all four edges; lungs do not.
        labels = measure.label(dark, connectivity=1)
        regions = [
            r
            for r in measure.regionprops(labels)
            if r.area >= min_area and not _touches_all_edges(r.bbox, h, w)
        ]
    if not regions:
        return []
    regions.sort(key=lambda r: r.area, reverse=True)
    if len(regions) > 1:
        # The trachea (and main bronchi) is a small, compact, midline air region: not lung.
        not_trachea = [r for r in regions if not _is_trachea_like(r, h, w)]
        regions = not_trachea or regions
    keep = regions[:1]
    if len(regions) > 1 and regions[1].area >= _SECOND_LUNG_RATIO * regions[0].area:
        keep.append(regions[1])
    return [labels == r.label for r in keep]


def _touches_all_edges(bbox: tuple[int, int, int, int], h: int, w: int) -> bool:
    r0, c0, r1, c1 = bbox
    return r0 == 0 and c0 == 0 and r1 == h and c1 == w


def _is_trachea_like(region, h: int, w: int) -> bool:  # region: skimage RegionProperties
    cx = region.centroid[1]
    compact = region.area < _TRACHEA_AREA * h * w and region.solidity > _TRACHEA_SOLIDITY
    return compact and abs(cx - w / 2) < 0.08 * w


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
    x = _check_2d(x, "image")
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


def lung_box(unit_image: np.ndarray, margin: float = 0.06) -> tuple[int, int, int, int]:
    """A square box around both lungs, in the slice's pixel coordinates.

    The lungs are derived (:func:`derive_lung_mask`) on a copy shrunk to 128 px. Their bounding
    box grows by ``margin`` x the slice side on every side and is mirrored about the body's
    midline (the column centre of the non-air pixels), so a lung the derivation missed (wholly
    consolidated, as bright as tissue) is still inside it; the shorter side then grows to a
    square where the slice allows. A crop must never cut lung off, so the whole slice is the
    box where less than 60% of the slice's border is air (a slice already cropped to the lungs,
    as MedSeg's: 2-40% there, 85-100% on full field-of-view slices of the other sources), where
    the lungs found cover less than 3% of the slice (a failed derivation, the apex), or where a
    lung touches the slice's edge.

    Args:
        unit_image: 2-D float slice in [0, 1] (after :func:`to_unit`).
        margin: fraction of the slice side added around the lungs.

    Returns:
        (row0, row1, col0, col1), half-open, inside the slice.
    """
    x = _check_2d(unit_image, "image")
    h, w = x.shape
    small = resize(x, _CROP_WORK)
    if float(np.ptp(small)) < 1e-3:
        return (0, h, 0, w)
    border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    if (border < filters.threshold_otsu(small)).mean() < _CROP_MIN_BORDER_AIR:
        return (0, h, 0, w)  # no air around the body: the slice is already cropped
    lung = derive_lung_mask(small)
    if lung.mean() < _CROP_MIN_LUNG:
        return (0, h, 0, w)
    edge = max(1, round(0.02 * _CROP_WORK))
    if lung[:edge].any() or lung[-edge:].any() or lung[:, :edge].any() or lung[:, -edge:].any():
        return (0, h, 0, w)
    sy, sx = h / _CROP_WORK, w / _CROP_WORK
    rows, cols = np.nonzero(lung)
    r0, r1 = rows.min() * sy, (rows.max() + 1) * sy
    c0, c1 = cols.min() * sx, (cols.max() + 1) * sx
    body = small > max(float(np.quantile(small, 0.05)) + 0.05, 0.15)
    if body.any():
        mid = (np.nonzero(body.any(axis=0))[0][[0, -1]].mean() + 0.5) * sx
        c0, c1 = min(c0, 2 * mid - c1), max(c1, 2 * mid - c0)
    r0, r1 = r0 - margin * h, r1 + margin * h
    c0, c1 = c0 - margin * w, c1 + margin * w
    side = max(r1 - r0, c1 - c0)
    rc, cc = (r0 + r1) / 2, (c0 + c1) / 2
    box = []
    for centre, n in ((rc, h), (cc, w)):
        length = min(side, n)
        lo = min(max(centre - length / 2, 0.0), n - length)
        box += [int(np.floor(lo)), int(min(n, np.ceil(lo + length)))]
    return tuple(box)  # type: ignore[return-value]


def paste_back(
    maps: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], shape: tuple[int, int]
) -> np.ndarray:
    """Map model-size maps (N, S, S) back to native slices (N, H, W) through their crop boxes.

    Bilinear inside each box, 0 outside it (the crop keeps the lungs, so nothing was predicted
    there). The inverse of the crop + resize of :func:`preprocess_slice`.
    """
    import torch
    import torch.nn.functional as F

    maps = np.asarray(maps, dtype=np.float32)
    out = np.zeros((len(maps), *shape), dtype=np.float32)
    for k, (r0, r1, c0, c1) in enumerate(boxes):
        t = torch.from_numpy(np.ascontiguousarray(maps[k]))[None, None]
        out[k, r0:r1, c0:c1] = F.interpolate(
            t, size=(r1 - r0, c1 - c0), mode="bilinear", align_corners=False
        )[0, 0].numpy()
    return out


def _mask_input(mask: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = _check_2d(mask, what)
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
