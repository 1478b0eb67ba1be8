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
from .dicom_fields import (
    GAP_FACTOR,
    check_modality,
    dicom_pixels,
    lps_to_ras,
    no_pixels,
    slice_geometry,
    states_spacing,
)
from .image import DicomSource, ImageData, affine_spacing, readonly, reorients, to_canonical
from .multiframe import is_multiframe, read_frames_series, read_multiframe

#: Most images of another orientation or size than the rest of a series taken for scouts.
MAX_SCOUTS = 3


def _drop_pixels(ds: pydicom.Dataset) -> None:
    """Free a header's pixel data (and pydicom's decoded copy) once the slice is in the volume."""
    if "PixelData" in ds:
        del ds.PixelData
    if getattr(ds, "_pixel_array", None) is not None:
        ds._pixel_array = None


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
        raise no_pixels(ds, path)
    check_modality(ds, path)
    if is_multiframe(ds):
        return read_multiframe(path, ds)
    arr = dicom_pixels(ds, path)
    row, col, pos, ps = slice_geometry(ds, path)
    thickness = float(ds.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = np.cross(row, col) * thickness
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = row * ps[1]
    lps[:3, 3] = pos
    stored = lps_to_ras() @ lps
    vol, affine = to_canonical(arr[None], stored, path)
    reoriented = reorients(stored, path)
    if vol.shape[0] != 1:
        # Not an axial slice: keep the stored in-plane order rather than a sideways view.
        vol, affine, reoriented = arr[None], stored, False
    image = vol[0]
    known = states_spacing(ds)
    return ImageData(
        readonly(image), "hu", affine_spacing(affine)[1:], affine, path, reoriented, known
    )


def dicom_series(folder: str | Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """The DICOM image files of a folder (not recursive), grouped by SeriesInstanceUID, each
    with its header (pixel data deferred: read from the file when first used, so a file is
    read once however it is used afterwards).

    Files that are not DICOM (no preamble, e.g. a README) and DICOM files without pixel data
    (DICOMDIR, reports) are skipped; a ``.dcm`` file that cannot be parsed raises ``InputError``.
    """
    folder = Path(folder)
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        ds = read_header(f, strict=f.suffix.lower() == ".dcm")
        if ds is None or not _has_pixel_tag(ds):
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
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


#: Values longer than this (the pixel data) are read from the file only when first used.
DEFER = "64 KB"


def read_header(path: Path, *, strict: bool) -> pydicom.Dataset | None:
    """A DICOM file's dataset with its pixel data deferred; ``None`` for a non-DICOM file
    when not ``strict`` (else ``InputError`` naming the file)."""
    try:
        return pydicom.dcmread(path, defer_size=DEFER, force=strict)
    except Exception as e:
        if not strict:
            return None
        raise InputError(path, f"cannot read DICOM ({type(e).__name__}: {e})") from None


def _has_pixel_tag(ds: pydicom.Dataset) -> bool:
    # Rows/Columns mark an image (a truncated file may have lost its PixelData).
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
            row, col, _, _ = slice_geometry(items[0][1], items[0][0])
            normal = np.cross(row, col)
            return [float(np.dot(slice_geometry(ds, f)[2], normal)) for f, ds in items], True
        except InputError:
            if strict:
                raise
    return [_instance_number(ds, i) for i, (_, ds) in enumerate(items)], False


def plane_key(ds: pydicom.Dataset) -> tuple:
    """(Rows, Columns, orientation to 2 decimals): what a series' slices share and a scout
    does not; malformed values are kept as text (a later read names them)."""
    try:
        iop = tuple(round(float(v), 2) for v in ds.get("ImageOrientationPatient", []))
    except (TypeError, ValueError):
        iop = (str(ds.get("ImageOrientationPatient")),)
    return (str(ds.get("Rows", "")), str(ds.get("Columns", "")), iop)


def is_localizer(ds: pydicom.Dataset) -> bool:
    return "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]


def _without_localizers(
    folder: Path, datasets: list[tuple[Path, pydicom.Dataset]]
) -> list[tuple[Path, pydicom.Dataset]]:
    """The series without its scout (localizer) images: ImageType LOCALIZER, or an orientation
    or image size that differs from the rest's; left out with a warning, never taken for slices
    (their position would otherwise read as a gap of hundreds of mm)."""

    images = [(f, ds) for f, ds in datasets if not is_localizer(ds)]
    if not images:
        raise InputError(folder, "a localizer (scout) series, not axial CT slices")
    keys = [plane_key(ds) for _, ds in images]
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
    """The one image series of a folder (or series ``series`` of it) as a volume."""
    if not any(folder.iterdir()):
        raise InputError(folder, "empty folder")
    groups = dicom_series(folder)
    if not groups:
        raise InputError(folder, "folder holds no DICOM image files" + _subfolder_hint(folder))
    if series is not None:
        if series not in groups:
            raise InputError(folder, f"no series {series!r}; found {sorted(groups)}")
        items = groups[series]
    elif len(groups) > 1:
        found = ", ".join(f"{uid} ({len(fs)} files)" for uid, fs in sorted(groups.items()))
        raise InputError(
            folder, f"holds {len(groups)} DICOM series: {found}; pick one with series=UID"
        )
    else:
        items = next(iter(groups.values()))
    return series_volume(folder, items, gaps)


def series_volume(folder: Path, datasets: list[tuple[Path, pydicom.Dataset]], gaps: str):
    """One series' files (with their headers from :func:`read_header`) as a volume in HU.

    A single multi-frame file is read by :func:`.multiframe.read_multiframe`; scouts among the
    slices are left out (with a warning); the pixel data of each file is read once, here.
    """
    frames = [f for f, ds in datasets if is_multiframe(ds)]
    if frames:
        for f, ds in datasets:
            check_modality(ds, f)
        if len(frames) < len(datasets):
            raise InputError(
                folder,
                f"a series mixing {len(frames)} multi-frame and {len(datasets) - len(frames)} "
                f"single-frame files ({frames[0].name}, ...): cannot stack them as one scan",
            )
        if len(datasets) == 1:
            return read_multiframe(*datasets[0])
        return read_frames_series(folder, datasets, gaps)
    for f, ds in datasets:
        check_modality(ds, f)
    datasets = _without_localizers(folder, datasets)
    row, col, _, ps = slice_geometry(datasets[0][1], datasets[0][0])
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
    shape = (int(datasets[0][1].get("Rows", 0)), int(datasets[0][1].get("Columns", 0)))
    vol = np.empty((len(datasets), *shape), np.float32)
    for k, (f, ds) in enumerate(datasets):
        pixels = dicom_pixels(ds, f)
        if pixels.shape != shape:
            raise InputError(
                folder, f"slices of one series differ in size: {shape}, {pixels.shape} ({f.name})"
            )
        vol[k] = pixels
        _drop_pixels(ds)  # keep the headers (for DICOM outputs), not a second copy of pixels
    first = slice_geometry(datasets[0][1], datasets[0][0])[2]
    last = slice_geometry(datasets[-1][1], datasets[-1][0])[2]
    lps = np.eye(4)
    if len(datasets) > 1 and has_pos:
        lps[:3, 0] = (last - first) / (len(datasets) - 1)
    else:
        lps[:3, 0] = normal * float(datasets[0][1].get("SliceThickness", 1.0) or 1.0)
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = row * ps[1]
    lps[:3, 3] = first
    stored = lps_to_ras() @ lps
    vol, affine = to_canonical(vol, stored, folder)
    known = all(states_spacing(ds) for _, ds in datasets)
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
