"""Multi-frame CT files: Enhanced CT and Legacy Converted Enhanced CT (per-frame positions,
spacing and rescale in their functional groups, read by highdicom), and the older CT Image
Storage files that hold several frames with one position and a slice spacing."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom

from ..errors import InputError
from .dicom_fields import GAP_FACTOR, dicom_pixels, lps_to_ras, slice_geometry
from .image import ImageData, affine_spacing, readonly, reorients, to_canonical

ENHANCED = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
}


def is_multiframe(ds: pydicom.Dataset) -> bool:
    """A file read here: several frames, or an Enhanced / Legacy Converted CT file (whose
    geometry and rescale sit in functional groups, even with one frame)."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return frames > 1 or str(ds.get("SOPClassUID", "")) in ENHANCED


def read_multiframe(path: Path, ds: pydicom.Dataset) -> ImageData:
    """A multi-frame CT file as a volume in HU, frames placed by their own positions.

    Raises:
        InputError: naming ``path``: frames that do not form one regular stack of parallel
            slices (a scout frame, uneven steps), or a classic multi-frame file that states no
            slice spacing.
    """
    array, lps, known = _frames(path, ds)
    return _image(array, lps, path, known)


def _frames(path: Path, ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, bool]:
    """A file's frames in HU, its (frame, row, column) -> LPS affine, and whether the spacing
    is known (a classic file stepped by SliceThickness alone is not)."""
    if str(ds.get("SOPClassUID", "")) in ENHANCED:
        return (*_enhanced(path, ds), True)
    return _classic(path, ds)


def _image(array: np.ndarray, lps: np.ndarray, path: Path, known: bool) -> ImageData:
    stored = lps_to_ras() @ lps
    vol, affine = to_canonical(array, stored, path)
    return ImageData(
        readonly(vol), "hu", affine_spacing(affine), affine, path, reorients(stored, path), known
    )


def read_frames_series(
    folder: Path, items: list[tuple[Path, pydicom.Dataset]], gaps: str
) -> ImageData:
    """Several multi-frame (or single-frame Enhanced CT) files of one series: every frame
    placed by its own position along the slice normal and stacked, as single-frame files are.

    Raises:
        InputError: naming the folder: files of different frame size or orientation, two
            frames at one position, or (``gaps="error"``) missing positions.
    """
    frames, known = [], True
    first_lps = None
    for f, ds in items:
        array, lps, ok = _frames(f, ds)
        known &= ok
        if first_lps is None:
            first_lps = lps
        elif array.shape[1:] != frames[0][1].shape or not np.allclose(
            lps[:3, 1:3], first_lps[:3, 1:3], atol=1e-3
        ):
            raise InputError(folder, f"{f.name}: frames of another size or orientation")
        frames += [(lps[:3, 3] + k * lps[:3, 0], array[k]) for k in range(len(array))]
        if "PixelData" in ds:
            del ds.PixelData
    normal = np.cross(first_lps[:3, 2], first_lps[:3, 1])
    normal /= np.linalg.norm(normal)
    frames.sort(key=lambda fr: float(fr[0] @ normal))
    pos = np.array([float(fr[0] @ normal) for fr in frames])
    steps = np.diff(pos)
    if len(steps) and steps.min() < 1e-3 * max(float(np.median(steps)), 1e-6):
        raise InputError(folder, "two frames at the same position: cannot order the series")
    if len(steps) > 1 and steps.max() > GAP_FACTOR * np.median(steps) and gaps != "ignore":
        msg = f"frame positions have gaps (step {steps.max():.2f} vs median {np.median(steps):.2f})"
        if gaps == "error":
            raise InputError(folder, msg + ": missing slices?")
        warnings.warn(f"{folder}: {msg}: missing slices?", stacklevel=4)
    lps = first_lps.copy()
    lps[:3, 3] = frames[0][0]
    if len(frames) > 1:
        lps[:3, 0] = (frames[-1][0] - frames[0][0]) / (len(frames) - 1)
    return _image(np.stack([fr[1] for fr in frames]), lps, folder, known)


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


def _classic(path: Path, ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, bool]:
    """Frames of a CT Image Storage file: the first at ImagePositionPatient, the next ones a
    SpacingBetweenSlices (else SliceThickness: then no volumes in mL, since overlapping or
    gapped reconstructions step otherwise) further along the slice normal."""
    spacing = ds.get("SpacingBetweenSlices")
    step = spacing or ds.get("SliceThickness")
    try:
        step = float(step) if step not in (None, "") else 0.0
    except (TypeError, ValueError):
        step = 0.0
    if step <= 0:
        raise InputError(
            path,
            "multi-frame CT file without SpacingBetweenSlices or SliceThickness: "
            "the frames cannot be placed",
        )
    array = dicom_pixels(ds, path)
    row, col, pos, ps = slice_geometry(ds, path)
    source = "SpacingBetweenSlices" if spacing else "SliceThickness: no volumes in mL"
    warnings.warn(
        f"{path}: {len(array)} frames of one CT Image file placed {step:g} mm apart "
        f"({source}): the file gives no position per frame",
        stacklevel=4,
    )
    lps = np.eye(4)
    lps[:3, 0] = np.cross(row, col) * step
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = row * ps[1]
    lps[:3, 3] = pos
    known = bool(spacing) and bool(ds.get("PixelSpacing"))
    return (array if array.ndim == 3 else array[None]), lps, known
