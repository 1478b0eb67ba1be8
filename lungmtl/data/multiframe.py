"""Multi-frame CT files: Enhanced CT and Legacy Converted Enhanced CT (per-frame positions,
spacing and rescale in their functional groups, read by highdicom), and the older CT Image
Storage files that hold several frames with one position and a slice spacing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom

from ..errors import InputError
from .dicom_fields import dicom_pixels, lps_to_ras, slice_geometry
from .image import ImageData, affine_spacing, readonly, reorients, to_canonical

ENHANCED = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
}


def read_multiframe(path: Path, ds: pydicom.Dataset) -> ImageData:
    """A multi-frame CT file as a volume in HU, frames placed by their own positions.

    Raises:
        InputError: naming ``path``: frames that do not form one regular stack of parallel
            slices (a scout frame, uneven steps), or a classic multi-frame file that states no
            slice spacing.
    """
    sop = str(ds.get("SOPClassUID", ""))
    if sop in ENHANCED:
        array, lps = _enhanced(path, ds)
    else:
        array, lps = _classic(path, ds)
    stored = lps_to_ras() @ lps
    vol, affine = to_canonical(array, stored, path)
    return ImageData(
        readonly(vol), "hu", affine_spacing(affine), affine, path, reorients(stored, path), True
    )


def _enhanced(path: Path, ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    import highdicom as hd

    try:
        volume = hd.Image.from_dataset(ds, copy=False).get_volume(
            apply_modality_transform=True, dtype=np.float32
        )
    except Exception as e:  # highdicom names the geometry problem
        raise InputError(
            path, f"{ENHANCED[str(ds.SOPClassUID)]} frames are not one regular stack ({e})"
        ) from None
    return np.asarray(volume.array, np.float32), np.asarray(volume.affine, np.float64)


def _classic(path: Path, ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a CT Image Storage file: the first at ImagePositionPatient, the next ones a
    SpacingBetweenSlices (else SliceThickness) further along the slice normal."""
    step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    if not step or float(step) <= 0:
        raise InputError(
            path,
            "multi-frame CT file without SpacingBetweenSlices or SliceThickness: "
            "the frames cannot be placed",
        )
    array = dicom_pixels(ds, path)
    row, col, pos, ps = slice_geometry(ds, path)
    warnings.warn(
        f"{path}: {len(array)} frames of one CT Image file placed {float(step):g} mm apart "
        "(SpacingBetweenSlices or SliceThickness): the file gives no position per frame",
        stacklevel=4,
    )
    lps = np.eye(4)
    lps[:3, 0] = np.cross(row, col) * float(step)
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = row * ps[1]
    lps[:3, 3] = pos
    return array, lps
