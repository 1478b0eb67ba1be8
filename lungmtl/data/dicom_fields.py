"""DICOM header fields and pixels of one file: geometry, rescale to HU, modality check; shared
by the single-frame series reader (:mod:`.dicom`) and the multi-frame one (:mod:`.multiframe`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from ..errors import InputError

#: A step between slices this many times the median step marks missing slices.
GAP_FACTOR = 1.5


def lps_to_ras() -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_numbers(ds: pydicom.Dataset, key: str, n: int, path: Path) -> np.ndarray | None:
    """The ``n`` numbers of a multi-valued DICOM attribute; None where it is absent or empty."""
    value = ds.get(key)
    if value is None or value == "":
        return None
    values = list(value) if hasattr(value, "__len__") and not isinstance(value, str) else [value]
    try:
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{key} is not numeric: {values}") from None
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise InputError(path, f"{key} must hold {n} finite numbers, got {values}")
    return arr


def states_spacing(ds: pydicom.Dataset) -> bool:
    """Whether the file gives PixelSpacing (else :func:`slice_geometry` assumes 1 mm)."""
    return bool(ds.get("PixelSpacing"))


def slice_geometry(
    ds: pydicom.Dataset, path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row cosine, column cosine, position, pixel spacing) in LPS, with safe defaults.

    Raises:
        InputError: naming ``path``, for a present but malformed attribute (ImageOrientation-
            Patient without 6 numbers or with parallel/zero directions, ImagePositionPatient
            without 3, PixelSpacing without 2 positive numbers).
    """
    iop = dicom_numbers(ds, "ImageOrientationPatient", 6, path)
    ipp = dicom_numbers(ds, "ImagePositionPatient", 3, path)
    ps = dicom_numbers(ds, "PixelSpacing", 2, path)
    row = iop[:3] if iop is not None else np.array([1.0, 0.0, 0.0])
    col = iop[3:] if iop is not None else np.array([0.0, 1.0, 0.0])
    if np.linalg.norm(np.cross(row, col)) < 1e-3:
        raise InputError(
            path, f"ImageOrientationPatient {iop.tolist()}: row and column directions are parallel"
        )
    pos = ipp if ipp is not None else np.zeros(3)
    if ps is not None and (ps <= 0).any():
        raise InputError(path, f"PixelSpacing must be positive, got {ps.tolist()}")
    spacing = ps if ps is not None else np.ones(2)
    return row, col, pos, spacing


def check_modality(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse images of other modalities (MR, PET, X-ray, ...): HU windows and lung masks are
    CT's. A file that states no Modality (some anonymised exports) is read as CT."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality != "CT":
        raise InputError(path, f"Modality {modality}, not CT: lungmtl reads CT images only")


def _rescale(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 where absent); a slope of 0 is refused."""
    slope = dicom_numbers(ds, "RescaleSlope", 1, path)
    intercept = dicom_numbers(ds, "RescaleIntercept", 1, path)
    if slope is not None and slope[0] == 0:
        raise InputError(
            path, "RescaleSlope is 0: every pixel would read as RescaleIntercept (broken header)"
        )
    return (
        1.0 if slope is None else float(slope[0]),
        0.0 if intercept is None else float(intercept[0]),
    )


def no_pixels(ds: pydicom.Dataset, path: Path) -> InputError:
    """The error for a DICOM file without PixelData: empty, truncated, or no image at all."""
    size = path.stat().st_size
    if size == 0:
        return InputError(path, "empty file (0 bytes)")
    meta = getattr(ds, "file_meta", None)
    sop = str(getattr(meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    sop_name = getattr(getattr(meta, "MediaStorageSOPClassUID", None), "name", sop)
    if "Rows" in ds or "Image Storage" in str(sop_name) or len(ds) < 2:
        return InputError(
            path, f"truncated DICOM file: it ends after {size} bytes, before its image"
        )
    return InputError(
        path, f"DICOM file holds no image (no PixelData; {sop_name or 'no SOP class'})"
    )


def dicom_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """The frame (H, W) or frames (N, H, W) of a file in HU (RescaleSlope/Intercept applied)."""
    try:
        arr = ds.pixel_array
    except Exception as e:  # missing decoder, truncated pixel data, ...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = (
            "JPEG-compressed files need pylibjpeg + pylibjpeg-libjpeg (or gdcm)"
            if getattr(syntax, "is_compressed", True)
            else "truncated or corrupt pixel data?"
        )
        raise InputError(
            path, f"cannot decode DICOM pixels ({type(e).__name__}: {e}); {hint}"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.ndim != (3 if frames > 1 else 2) or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(path, f"expected grey frames, got pixel shape {arr.shape} (colour?)")
    slope, intercept = _rescale(ds, path)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
