"""DICOM images: one file or one series of a folder, in Hounsfield units and the canonical view.

RescaleSlope/Intercept are applied. A series with missing slices (a step > 1.5x the median step)
gives a ``UserWarning`` by default (``gaps="error"`` raises, ``"ignore"`` is silent); the affine
uses the mean step, so world positions beyond a gap are approximate.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pydicom

from ..errors import InputError
from .image import DicomSource, ImageData, affine_spacing, readonly, reorients, to_canonical

GAP_FACTOR = 1.5
#: Most images of another orientation or size than the rest of a series taken for scouts.
MAX_SCOUTS = 3


def _lps_to_ras() -> np.ndarray:
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


def _states_spacing(ds: pydicom.Dataset) -> bool:
    """Whether the file gives PixelSpacing (else :func:`_slice_geometry` assumes 1 mm)."""
    return bool(ds.get("PixelSpacing"))


def _slice_geometry(
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


def _check_modality(ds: pydicom.Dataset, path: Path) -> None:
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


def _no_pixels(ds: pydicom.Dataset, path: Path) -> InputError:
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


def _dicom_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
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
    if arr.ndim != 2:
        raise InputError(
            path, f"expected one grey 2D frame, got pixel shape {arr.shape} (multi-frame/colour)"
        )
    slope, intercept = _rescale(ds, path)
    return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _dcmread(path: Path, *, strict: bool) -> pydicom.Dataset | None:
    """Read a DICOM file; ``None`` for a non-DICOM file when not ``strict``."""
    try:
        return pydicom.dcmread(path, force=strict)
    except Exception as e:
        if not strict:
            return None
        raise InputError(path, f"cannot read DICOM ({type(e).__name__}: {e})") from None


def read_dicom_file(path: Path) -> ImageData:
    ds = _dcmread(path, strict=True)
    if "PixelData" not in ds:
        raise _no_pixels(ds, path)
    _check_modality(ds, path)
    arr = _dicom_pixels(ds, path)
    row, col, pos, ps = _slice_geometry(ds, path)
    thickness = float(ds.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = np.cross(row, col) * thickness
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = row * ps[1]
    lps[:3, 3] = pos
    stored = _lps_to_ras() @ lps
    vol, affine = to_canonical(arr[None], stored, path)
    reoriented = reorients(stored, path)
    if vol.shape[0] != 1:
        # Not an axial slice: keep the stored in-plane order rather than a sideways view.
        vol, affine, reoriented = arr[None], stored, False
    image = vol[0]
    known = _states_spacing(ds)
    return ImageData(
        readonly(image), "hu", affine_spacing(affine)[1:], affine, path, reoriented, known
    )


def dicom_series(folder: str | Path) -> dict[str, list[Path]]:
    """The DICOM files of a folder (not recursive), grouped by SeriesInstanceUID.

    Files that are not DICOM (no preamble, e.g. a README) and DICOM files without pixel data
    (DICOMDIR, reports) are skipped; a ``.dcm`` file that cannot be parsed raises ``InputError``.
    """
    folder = Path(folder)
    series: dict[str, list[Path]] = {}
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        ds = _dcmread_header(f, strict=f.suffix.lower() == ".dcm")
        if ds is None or not _has_pixel_tag(ds):
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(f)
    return series


def is_dicom_file(path: Path) -> bool:
    """Whether a file carries the DICOM preamble (``DICM`` at byte 128), whatever its name."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _subfolder_hint(folder: Path, limit: int = 5) -> str:
    """Where DICOM files sit below a folder that holds none itself (a CD/DVD layout)."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if Path(root) == folder:
            continue
        n = sum(is_dicom_file(Path(root) / f) for f in files)
        if n:
            found.append(f"{Path(root).relative_to(folder)} ({n} files)")
        if len(found) >= limit:
            break
    if not found:
        return ""
    cd = " (a CD/DVD layout with a DICOMDIR)" if (folder / "DICOMDIR").exists() else ""
    more = ", ..." if len(found) >= limit else ""
    return (
        f" itself{cd}; its sub-folders do: {', '.join(found)}{more}: give the folder of one series"
    )


def _dcmread_header(path: Path, *, strict: bool) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=strict)
    except Exception as e:
        if not strict:
            return None
        raise InputError(path, f"cannot read DICOM ({type(e).__name__}: {e})") from None


def _has_pixel_tag(ds: pydicom.Dataset) -> bool:
    # With stop_before_pixels the PixelData element is absent; Rows/Columns mark an image.
    return "Rows" in ds and "Columns" in ds


def _instance_number(ds: pydicom.Dataset, default: int) -> float:
    try:
        return float(ds.get("InstanceNumber", default) or default)
    except (TypeError, ValueError):
        return float(default)


def slice_keys(
    items: list[tuple[Path, pydicom.Dataset]], strict: bool = True
) -> tuple[list[float], bool]:
    """Each slice's place in its series, and whether it is a position: the position along the
    first slice's normal when every file states one, else InstanceNumber (else file order).

    ``strict`` raises on malformed geometry (naming the file); otherwise the series falls back.
    """
    if items and all("ImagePositionPatient" in ds for _, ds in items):
        try:
            row, col, _, _ = _slice_geometry(items[0][1], items[0][0])
            normal = np.cross(row, col)
            return [float(np.dot(_slice_geometry(ds, f)[2], normal)) for f, ds in items], True
        except InputError:
            if strict:
                raise
    return [_instance_number(ds, i) for i, (_, ds) in enumerate(items)], False


def _is_localizer(ds: pydicom.Dataset) -> bool:
    return "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]


def _without_localizers(
    folder: Path, datasets: list[tuple[Path, pydicom.Dataset]]
) -> list[tuple[Path, pydicom.Dataset]]:
    """The series without its scout (localizer) images: ImageType LOCALIZER, or an orientation
    or image size that differs from the rest's; left out with a warning, never taken for slices
    (their position would otherwise read as a gap of hundreds of mm)."""

    def shape_and_plane(ds: pydicom.Dataset) -> tuple:
        iop = [round(float(v), 2) for v in ds.get("ImageOrientationPatient", [])]
        return (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), tuple(iop))

    images = [(f, ds) for f, ds in datasets if not _is_localizer(ds)]
    if not images:
        raise InputError(folder, "a localizer (scout) series, not axial CT slices")
    keys = [shape_and_plane(ds) for _, ds in images]
    common = max(set(keys), key=keys.count)
    odd = [item for item, k in zip(images, keys, strict=True) if k != common]
    if odd and (len(odd) > MAX_SCOUTS or 4 * len(odd) >= len(images)):
        odd = []  # not a scout or two: a mixed series, refused further on with its reason
    kept = [item for item in images if all(item[0] != f for f, _ in odd)]
    dropped = [f.name for f, _ in datasets if all(f != g for g, _ in kept)]
    if dropped:
        shown = ", ".join(dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        warnings.warn(
            f"{folder}: {len(dropped)} localizer (scout) image(s) left out of the series "
            f"({shown}): ImageType LOCALIZER, or another orientation or size than its slices",
            stacklevel=4,
        )
    return kept


def read_dicom_series(folder: Path, series: str | None, gaps: str) -> ImageData:
    if not any(folder.iterdir()):
        raise InputError(folder, "empty folder")
    groups = dicom_series(folder)
    if not groups:
        raise InputError(folder, "folder holds no DICOM image files" + _subfolder_hint(folder))
    if series is not None:
        if series not in groups:
            raise InputError(folder, f"no series {series!r}; found {sorted(groups)}")
        files = groups[series]
    elif len(groups) > 1:
        found = ", ".join(f"{uid} ({len(fs)} files)" for uid, fs in sorted(groups.items()))
        raise InputError(
            folder, f"holds {len(groups)} DICOM series: {found}; pick one with series=UID"
        )
    else:
        files = next(iter(groups.values()))
    datasets = [(f, _dcmread(f, strict=True)) for f in files]
    for f, ds in datasets:
        _check_modality(ds, f)
    datasets = _without_localizers(folder, datasets)
    row, col, _, ps = _slice_geometry(datasets[0][1], datasets[0][0])
    normal = np.cross(row, col)
    key, has_pos = slice_keys(datasets)
    order = np.argsort(key, kind="stable")
    datasets = [datasets[i] for i in order]
    pos = np.sort(np.asarray(key))
    steps = np.diff(pos)
    same = np.flatnonzero(steps < 1e-3 * max(np.median(steps), 1e-6)) if len(steps) else []
    if len(same):
        i = int(same[0])
        pair = f"{datasets[i][0].name} and {datasets[i + 1][0].name}"
        what = (
            f"two slices at the same position ({pair}, {pos[i]:g} mm along the normal)"
            if has_pos
            else f"no ImagePositionPatient and the same InstanceNumber {pos[i]:g} in {pair}"
        )
        raise InputError(
            folder, f"{what}: {len(same)} duplicate(s), cannot order the slices of one series"
        )
    if len(steps) > 1 and np.max(steps) > GAP_FACTOR * np.median(steps) and gaps != "ignore":
        msg = (
            f"slice positions have gaps (step {np.max(steps):.2f} vs median "
            f"{np.median(steps):.2f}): missing slices?"
        )
        if gaps == "error":
            raise InputError(folder, msg)
        warnings.warn(f"{folder}: {msg}", stacklevel=4)
    slices = [_dicom_pixels(ds, f) for f, ds in datasets]
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise InputError(folder, f"slices of one series differ in size: {sorted(shapes)}")
    vol = np.stack(slices)
    for _, ds in datasets:  # keep the headers (for DICOM outputs), not a second copy of pixels
        if "PixelData" in ds:
            del ds.PixelData
    first = _slice_geometry(datasets[0][1], datasets[0][0])[2]
    last = _slice_geometry(datasets[-1][1], datasets[-1][0])[2]
    lps = np.eye(4)
    if len(datasets) > 1 and has_pos:
        lps[:3, 0] = (last - first) / (len(datasets) - 1)
    else:
        lps[:3, 0] = normal * float(datasets[0][1].get("SliceThickness", 1.0) or 1.0)
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = row * ps[1]
    lps[:3, 3] = first
    stored = _lps_to_ras() @ lps
    vol, affine = to_canonical(vol, stored, folder)
    known = all(_states_spacing(ds) for _, ds in datasets)
    return ImageData(
        readonly(vol),
        "hu",
        affine_spacing(affine),
        affine,
        folder,
        reorients(stored, folder),
        known,
        DicomSource(tuple(ds for _, ds in datasets), stored),
    )
