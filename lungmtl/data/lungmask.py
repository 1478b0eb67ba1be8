"""The lungs of one slice, derived from its intensities: a lung mask, and the box a crop keeps.

The mask is used to normalise intensities (:func:`lungmtl.data.preprocess.normalise_lung`) and the
box to crop the slice to the lungs (``crop="lungs"``, lungmtl's own addition, off in the paper
configs).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import filters, measure, morphology, segmentation

from .resize import check_2d, resize

_CROP_MIN_BORDER_AIR = 0.6  # crop only slices whose border is mostly outside air (full view)
_CROP_MIN_LUNG = 0.03  # crop only around a lung mask at least this large (fraction of the slice)
_CROP_WORK = 128  # side at which the crop's lung mask is derived (the box is coarse anyway)

# Lung-mask derivation settings, tuned on the real lung masks of covid19-ct-seg20 and
# medseg-covid2 (tests/test_data_lungmask.py measures them). Sizes are fractions of the slice area,
# so they hold at any resolution.
_SMOOTH_SIGMA = 0.5  # Gaussian sigma (pixels per 256 px of side) against noise before thresholding
_MIN_AREA = 0.002  # a lung component covers at least this fraction of the slice
_SECOND_LUNG_RATIO = 0.05  # the second component must reach this fraction of the first
_EDGE_ALPHA = 0.3  # border growth threshold: this far from the Otsu threshold to the tissue mean
_EDGE_BAND = 2  # ... within this many pixels of the thresholded lung (partial-volume border)
_TRACHEA_AREA = 0.015  # compact midline air smaller than this is the trachea, not lung
_TRACHEA_SOLIDITY = 0.85
_MAX_HOLE = 0.03  # holes up to this fraction of the slice are filled (the heart is larger)


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
    included. Slices cropped to the lungs (most of the border is tissue, :func:`is_lung_crop`)
    keep the dark regions that touch the border but not all four edges.

    Known weak spots: slices holding a sliver of lung (apex, bases) where bowel gas or the trachea
    is larger than the lung, and a lung wholly consolidated (as bright as tissue).

    Args:
        unit_image: 2-D float slice in [0, 1], lung dark.

    Returns:
        bool array, same shape; all False when no lung-like region is found.
    """
    found = _dark_map(unit_image)
    if found is None:
        h, w = np.asarray(unit_image).shape
        return np.zeros((h, w), dtype=bool)
    smooth, threshold, bright = found
    h, w = smooth.shape
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


def _dark_map(unit_image: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """The lightly smoothed slice, the Otsu threshold between air/lung and tissue, and the mean
    tissue level above it (padding at the minimum ignored); None for a flat slice."""
    image = check_2d(unit_image, "image").astype(np.float32)
    h, w = image.shape
    smooth = ndimage.gaussian_filter(image, sigma=_SMOOTH_SIGMA * max(1.0, min(h, w) / 256.0))
    lo = float(smooth.min())
    inside = smooth[smooth > lo + 0.02]
    values = inside if inside.size > 0.05 * smooth.size else smooth.ravel()
    if float(values.max()) - float(values.min()) < 1e-3:
        return None
    threshold = filters.threshold_otsu(values)
    return smooth, float(threshold), float(values[values >= threshold].mean())


def looks_like_lung_crop(unit_image: np.ndarray) -> bool:
    """Whether a windowed slice in [0, 1] is cropped to the lungs (see :func:`is_lung_crop`)."""
    found = _dark_map(unit_image)
    return found is not None and is_lung_crop(found[0] < found[1])


def _lung_components(dark: np.ndarray) -> list[np.ndarray]:
    """Pick the one or two lung components out of a dark (air-like) binary map."""
    h, w = dark.shape
    min_area = _MIN_AREA * h * w
    labels = measure.label(segmentation.clear_border(dark), connectivity=1)
    regions = [r for r in measure.regionprops(labels) if r.area >= min_area]
    crop = is_lung_crop(dark)
    if not regions or crop:
        # Slices cropped to the lungs: the lungs touch the border. Outside air of a full field
        # of view surrounds the body, so it touches all four edges; lungs do not, except in a
        # crop, which has no outside air (both lungs may then meet along the border).
        labels = measure.label(dark, connectivity=1)
        regions = [
            r
            for r in measure.regionprops(labels)
            if r.area >= min_area and (crop or not _touches_all_edges(r.bbox, h, w))
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


#: Share of the image border that is tissue above which a slice is taken as a lung crop: full
#: fields of view have air (or padding) along the border (at most 0.32 of it tissue over the
#: real sources), published lung crops cut through the chest wall (medseg100: 0.64 and more).
CROP_BORDER_TISSUE = 0.5


def is_lung_crop(dark: np.ndarray) -> bool:
    """A slice cropped to the lungs (medseg100 and other published crops): most of the image
    border crosses tissue, not the air around the body; its lungs then touch the border."""
    border = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
    return float(1.0 - border.mean()) >= CROP_BORDER_TISSUE


def _touches_all_edges(bbox: tuple[int, int, int, int], h: int, w: int) -> bool:
    r0, c0, r1, c1 = bbox
    return r0 == 0 and c0 == 0 and r1 == h and c1 == w


def _is_trachea_like(region, h: int, w: int) -> bool:  # region: skimage RegionProperties
    cx = region.centroid[1]
    compact = region.area < _TRACHEA_AREA * h * w and region.solidity > _TRACHEA_SOLIDITY
    return compact and abs(cx - w / 2) < 0.08 * w


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
    x = check_2d(unit_image, "image")
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
