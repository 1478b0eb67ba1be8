"""One reader interface for CT images and masks: DICOM, NIfTI, PNG/JPEG/TIFF and ``.npy``.

Every reader returns an :class:`ImageData` (array + intensity kind + spacing + affine). Volumes
come out in one canonical *radiological axial* view, whatever the file's own voxel order:

* axis 0 (z): inferior -> superior,
* axis 1 (rows): anterior -> posterior,
* axis 2 (columns): patient right -> patient left,

so ``array[z]`` looks like an axial slice on a radiology workstation (patient's right on the
viewer's left, anterior at the top). ``affine`` maps indices of the returned array to RAS+ world
millimetres, so world positions are preserved by the reorientation.

Decisions (see docs/data-format.md):

* Intensity kind: DICOM is always Hounsfield units (RescaleSlope/Intercept applied). NIfTI and
  ``.npy`` hold no such flag, so the kind is guessed: minimum below -200 -> ``"hu"``, else
  ``"8bit"`` (windowed 0..255 data, such as the Radiopaedia cases of Zenodo 3757476).
* 8/16-bit rasters: grey, RGB, RGBA, palette -> one luminance channel (ITU-R 601, alpha dropped),
  kind ``"8bit"``. 16-bit grey PNG/TIFF are min-max scaled to 0..255 per image (their HU offset is
  not standardised, so HU cannot be recovered); use DICOM/NIfTI/.npy to keep HU.
* DICOM series with missing slices (a step > 1.5x the median step): a ``UserWarning`` by default
  (``gaps="error"`` raises, ``"ignore"`` is silent); the affine uses the mean step, so world
  positions beyond a gap are approximate.
* Arrays returned by :func:`read_image` are read-only: they are shared with a small LRU cache so
  that reading slice after slice of one volume does not re-read the file. Copy before editing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel import orientations as ornt
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..files import atomic_path

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (*RASTER_SUFFIXES, *NIFTI_SUFFIXES, ".dcm", ".npy")
HU_MIN_THRESHOLD = -200.0
GAP_FACTOR = 1.5
CACHE_SIZE = 4
# Voxel-axis codes (nibabel: the world direction an index increases towards) of the canonical view.
CANONICAL_AXCODES = ("S", "P", "L")
_TARGET = ornt.axcodes2ornt(CANONICAL_AXCODES)


@dataclass(frozen=True)
class ImageData:
    """A slice or volume and what is known about it.

    Attributes:
        array: float32; (H, W) for a slice, (Z, H, W) for a volume (canonical view, see module doc).
            HU when ``kind == "hu"``, 0..255 when ``kind == "8bit"``. Read-only (cached).
        kind: ``"hu"`` or ``"8bit"``.
        spacing: millimetres per axis of ``array``; 1.0 where unknown.
        affine: 4x4 mapping indices of ``array`` ((z, row, col), or (0, row, col) for a slice) to
            RAS+ world millimetres; ``None`` where the file holds no geometry.
        path: the file or folder read.
        spacing_known: the file states its pixel spacing (a DICOM without PixelSpacing gets
            1 mm pixels to keep a usable affine, but no volume should be reported from it).
        reoriented: the file stores its voxels in another order than the canonical view (a
            prone DICOM, most NIfTI files): a mask without geometry (PNG, ``.npy``) cannot be
            laid on it, since nothing says which of the two orders it follows.
    """

    array: np.ndarray
    kind: str
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    path: Path
    reoriented: bool = False
    spacing_known: bool = True


def suffix_of(path: str | Path) -> str:
    """The lower-case suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def guess_kind(array: np.ndarray) -> str:
    """``"hu"`` when the minimum is below -200 (air in HU is about -1000), else ``"8bit"``."""
    return "hu" if array.size and float(np.min(array)) < HU_MIN_THRESHOLD else "8bit"


def to_canonical(
    data: np.ndarray, affine: np.ndarray, path: str | Path = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a 3D array to the canonical (S, P, L) voxel order, keeping world positions.

    Args:
        data: a 3D array whose indices ``affine`` maps to RAS+ world mm.
        affine: 4x4.
        path: the file the array came from (named in errors).

    Returns:
        The reordered array (contiguous) and its affine: voxel ``v`` of the result sits at
        ``new_affine @ v``, the same world point as the corresponding voxel of ``data``.

    Raises:
        InputError: the affine has no usable axes (all zeros, NaN, two axes alike).
    """
    transform = _canonical_transform(affine, Path(path))
    out = ornt.apply_orientation(data, transform)
    new_affine = affine @ ornt.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(out), new_affine


def affine_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Millimetres per voxel along each array axis: the lengths of the affine's columns."""
    return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def _check_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(path, "contains NaN or infinite pixel values")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@contextlib.contextmanager
def _input_errors(path: Path, what: str) -> Iterator[None]:
    """Turn a library's exception while reading ``path`` into an :class:`InputError` naming it.

    nibabel, pydicom, PIL and numpy raise many types for bad files (``ValueError`` from a
    reorientation, ``DecompressionBombError``, ``struct.error``, ...); callers that go on with
    the next file catch ``InputError``. ``MemoryError`` is no fault of the file and passes.
    """
    try:
        yield
    except (InputError, MemoryError):
        raise
    except Exception as e:
        raise InputError(path, f"{what} ({type(e).__name__}: {e})") from None


def _reorients(affine: np.ndarray, path: Path) -> bool:
    """Whether :func:`to_canonical` changes the voxel order of a file with this affine."""
    transform = _canonical_transform(affine, path)
    return not np.array_equal(transform, [[0, 1], [1, 1], [2, 1]])


def _canonical_transform(affine: np.ndarray, path: Path) -> np.ndarray:
    """The axis transform from a file's voxel order to the canonical view, or InputError."""
    with _input_errors(path, "unusable affine (sform/qform): cannot tell its axes"):
        if not np.isfinite(affine).all():
            raise ValueError(f"non-finite values in {affine[:3].tolist()}")
        return ornt.ornt_transform(ornt.io_orientation(affine), _TARGET)


# ---------------------------------------------------------------- rasters (PNG, JPEG, TIFF)


def _read_raster(path: Path, *, labels: bool) -> np.ndarray:
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
    _check_finite(arr, path)
    if labels or arr.dtype == np.uint8:
        return arr
    if mode == "F":
        return arr.astype(np.float32)
    # 16-bit grey: min-max to 0..255 per image (documented in the module doc).
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)


# ---------------------------------------------------------------- NIfTI


def _load_nifti(
    path: Path, dtype: type | None = np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Array (3D, canonical view) and its affine, and the file's own affine, of a NIfTI file
    (``dtype=None``: values as stored)."""
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise InputError(path, f"cannot read NIfTI ({type(e).__name__}: {e})") from None
    data = _as_3d(data, path)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    _check_finite(data, path)
    return (*to_canonical(data, affine, path), affine)


def _nifti_states_spacing(path: Path) -> bool:
    """Whether a NIfTI file gives its voxel sizes: an sform, or positive pixdim[1..3] (nibabel
    silently turns zero pixdims into 1 mm, which must not become a volume in mL)."""
    try:
        img = nib.load(path)
        if int(img.header.get("sform_code", 0)) > 0:
            return True
        with nib.openers.ImageOpener(path) as f:
            raw = type(img.header).from_fileobj(f, check=False)
        zooms = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    except Exception:  # the reader reports unreadable files with its own message
        return True
    return bool(np.isfinite(zooms).all() and (zooms > 0).all())


def _as_3d(data: np.ndarray, path: Path) -> np.ndarray:
    # Trailing singleton axes (a 4D file with one time point) are harmless; anything else is not.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(path, f"expected a 2D or 3D image, got shape {data.shape}")
    return data


def _nifti_canonical_shape(path: Path) -> tuple[int, ...]:
    """Canonical-view shape from the header alone (no voxel data read)."""
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:
        raise InputError(path, f"cannot read NIfTI header ({type(e).__name__}: {e})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise InputError(path, f"expected a 2D or 3D image, got shape {shape}")
    transform = _canonical_transform(affine, path)
    return tuple(shape[int(ax)] for ax in np.argsort(transform[:, 0]))


# ---------------------------------------------------------------- DICOM


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


def _read_dicom_file(path: Path) -> ImageData:
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
    reoriented = _reorients(stored, path)
    if vol.shape[0] != 1:
        # Not an axial slice: keep the stored in-plane order rather than a sideways view.
        vol, affine, reoriented = arr[None], stored, False
    image = vol[0]
    known = _states_spacing(ds)
    return ImageData(
        _readonly(image), "hu", affine_spacing(affine)[1:], affine, path, reoriented, known
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


def _is_dicom_file(path: Path) -> bool:
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
        n = sum(_is_dicom_file(Path(root) / f) for f in files)
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


def _read_dicom_series(folder: Path, series: str | None, gaps: str) -> ImageData:
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
    row, col, _, ps = _slice_geometry(datasets[0][1], datasets[0][0])
    normal = np.cross(row, col)
    has_pos = all("ImagePositionPatient" in ds for _, ds in datasets)
    if has_pos:
        key = [float(np.dot(_slice_geometry(ds, f)[2], normal)) for f, ds in datasets]
    else:  # no geometry: InstanceNumber order is the best available
        key = [float(ds.get("InstanceNumber", i) or i) for i, (_, ds) in enumerate(datasets)]
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
        _readonly(vol),
        "hu",
        affine_spacing(affine),
        affine,
        folder,
        _reorients(stored, folder),
        known,
    )


# ---------------------------------------------------------------- dispatch + cache


def _read_uncached(path: Path, series: str | None, gaps: str) -> ImageData:
    if path.is_dir():
        return _read_dicom_series(path, series, gaps)
    suffix = suffix_of(path)
    if suffix == ".dcm":
        return _read_dicom_file(path)
    if suffix in NIFTI_SUFFIXES:
        vol, affine, stored = _load_nifti(path)
        kind = guess_kind(vol)
        known = _nifti_states_spacing(path)
        spacing = affine_spacing(affine)
        reoriented = _reorients(stored, path)
        return ImageData(_readonly(vol), kind, spacing, affine, path, reoriented, known)
    if suffix in RASTER_SUFFIXES:
        arr = _read_raster(path, labels=False).astype(np.float32, copy=False)
        return ImageData(_readonly(arr), "8bit", (1.0, 1.0), None, path)
    if suffix == ".npy":
        arr = _load_npy(path).astype(np.float32, copy=False)
        return ImageData(_readonly(arr), guess_kind(arr), (1.0,) * arr.ndim, None, path)
    if _is_dicom_file(path):  # PACS exports name their files without a suffix
        return _read_dicom_file(path)
    raise InputError(path, f"unknown image type {suffix!r}; supported: {', '.join(IMAGE_SUFFIXES)}")


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(path, f"cannot read .npy ({e})") from None
    if arr.ndim not in (2, 3):
        raise InputError(path, f"expected a 2D slice or 3D volume, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(path, f"expected numbers, got dtype {arr.dtype}")
    _check_finite(arr, path)
    return arr


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as e:
        raise InputError(path, f"cannot open ({e.strerror or e})") from None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=CACHE_SIZE)
def _read_cached(path: Path, stamp: tuple[int, int], series: str | None, gaps: str) -> ImageData:
    with _input_errors(path, "cannot read"):  # whatever a reader above let through
        return _read_uncached(path, series, gaps)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _mask_cached(path: Path, stamp: tuple[int, int]) -> np.ndarray:
    with _input_errors(path, "cannot read mask"):
        return _read_mask_uncached(path)


def _read_mask_uncached(path: Path) -> np.ndarray:
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        data, _, _ = _load_nifti(path, dtype=None)  # masks: keep the stored integers (memory)
    elif suffix in RASTER_SUFFIXES:
        data = _read_raster(path, labels=True)
    elif suffix == ".npy":
        data = _load_npy(path)
    else:
        raise InputError(path, f"unknown mask type {suffix!r}; supported: .png/.jpg/.tif/.nii/.npy")
    return _readonly(_to_labels(np.asarray(data), path))


def read_image(path: str | Path, *, series: str | None = None, gaps: str = "warn") -> ImageData:
    """Read a slice or volume, dispatching on what ``path`` is.

    Args:
        path: a folder (one DICOM series), ``.dcm`` (one slice, HU; also a DICOM file without
            a suffix, as PACS exports name them), ``.nii``/``.nii.gz``,
            ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff`` (8-bit grey) or ``.npy``.
        series: for a folder holding several DICOM series, the SeriesInstanceUID to read.
        gaps: missing slices in a DICOM series: ``"warn"`` (default), ``"error"`` or ``"ignore"``.

    Returns:
        The image; ``array`` is read-only and shared with an LRU cache (keyed by path, mtime and
        size), so reading slice after slice of one volume reads the file once.

    Raises:
        InputError: naming the file, for a missing, corrupt, truncated or unsupported file, an
            empty folder, NaN/inf pixels or a wrong number of dimensions.
    """
    if gaps not in ("warn", "error", "ignore"):
        raise ValueError(f"gaps must be 'warn', 'error' or 'ignore', not {gaps!r}")
    p = Path(path).absolute()
    return _read_cached(p, _stamp(p), series, gaps)


def _to_labels(data: np.ndarray, path: Path) -> np.ndarray:
    """A label image (uint8).

    Small values (max <= 10) are labels and kept; a two-valued 0/k image (0/255 PNG) becomes 0/1;
    anything else is a lossy (JPEG) binary mask and is thresholded at half its maximum.
    """
    if data.dtype == bool:
        return data.astype(np.uint8)
    _check_finite(data, path)
    if not data.size:
        return data.astype(np.uint8)
    lo, hi = float(data.min()), float(data.max())
    if lo < 0:
        raise InputError(path, f"mask has negative values (min {lo})")
    if hi <= 10:
        return np.rint(data).astype(np.uint8)
    if ((data == 0) | (data == hi)).all():
        return (data > 0).astype(np.uint8)
    return (data > hi / 2).astype(np.uint8)


def read_mask(path: str | Path, index: int | None = None) -> np.ndarray:
    """Read a label image: infection (0/1), multiclass (0/1/2/...) or lung mask.

    Args:
        path: ``.png``/``.jpg``/``.tif`` (0/255 or small integer labels), ``.nii``/``.nii.gz`` or
            ``.npy``. Volumes are reoriented to the same canonical view as :func:`read_image`.
        index: the z index for a volume; ``None`` returns the whole volume. ``None``, -1 or 0
            for a 2D file.

    Returns:
        uint8 labels, (H, W) (or (Z, H, W) for a volume with ``index=None``); 0/255 -> 0/1.
    """
    p = Path(path).absolute()
    labels = _mask_cached(p, _stamp(p))
    if labels.ndim == 3 and labels.shape[0] == 1 and suffix_of(p) == ".npy":
        labels = labels[0]
    if index is None or (labels.ndim == 2 and index in (-1, 0)):
        return labels
    if labels.ndim != 3:
        raise InputError(p, f"index {index} given but the mask is 2D {labels.shape}")
    if not 0 <= index < labels.shape[0]:
        raise InputError(p, f"slice index {index} outside 0..{labels.shape[0] - 1}")
    return labels[index]


def volume_shape(path: str | Path) -> tuple[int, ...]:
    """Shape of :func:`read_image`'s array, from the header alone for NIfTI (cheap)."""
    p = Path(path).absolute()
    if p.is_file() and suffix_of(p) in NIFTI_SUFFIXES:
        return _nifti_canonical_shape(p)
    return tuple(read_image(p).array.shape)


def clear_cache() -> None:
    """Forget cached images and masks (e.g. to free memory after a large volume)."""
    _read_cached.cache_clear()
    _mask_cached.cache_clear()


# ---------------------------------------------------------------- writing


def _default_affine(spacing: Sequence[float]) -> np.ndarray:
    """Affine of the canonical view for data without geometry: z -> S, rows -> P, cols -> L.

    Args:
        spacing: (sz, sy, sx) millimetres per (z, row, col) axis.
    """
    sz, sy, sx = (float(s) for s in spacing)
    return np.array(
        [[0.0, 0.0, -sx, 0.0], [0.0, -sy, 0.0, 0.0], [sz, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )


def write_mask_like(mask_zyx: np.ndarray, ref: ImageData, path: str | Path) -> None:
    """Write a mask as NIfTI in the geometry of the image it was predicted on.

    For a NIfTI input the mask is written back in that file's own voxel order, with its affine
    and header, so it overlays the original in ITK-SNAP / 3D Slicer. For other inputs the mask is
    stored in the canonical view with ``ref.affine`` (world-aligned; DICOM series included).

    Args:
        mask_zyx: labels in the canonical view, the shape of ``ref.array`` ((H, W) or (1, H, W)
            for a 2D reference).
        ref: the image as returned by :func:`read_image`.
        path: ``.nii`` or ``.nii.gz`` to write; replaced atomically
            (:func:`lungmtl.files.atomic_path`), so a failed write leaves the old file whole.
    """
    path = Path(path)
    if suffix_of(path) not in NIFTI_SUFFIXES:
        raise InputError(path, "masks are written as NIfTI: use a .nii or .nii.gz name")
    mask = np.asarray(mask_zyx)
    if ref.array.ndim == 2 and mask.ndim == 2:
        mask = mask[None]
    want = ref.array.shape if ref.array.ndim == 3 else (1, *ref.array.shape)
    if mask.shape != want:
        raise InputError(path, f"mask shape {mask.shape} does not match image {want} ({ref.path})")
    mask = np.ascontiguousarray(mask.astype(np.uint8))
    src = Path(ref.path)
    if src.is_file() and suffix_of(src) in NIFTI_SUFFIXES:
        orig = nib.load(src)
        back = ornt.ornt_transform(_TARGET, ornt.io_orientation(orig.affine))
        data = ornt.apply_orientation(mask, back)
        stored = _as_3d(np.empty(orig.shape, dtype=np.uint8), src).shape
        if data.shape != stored:
            raise InputError(path, f"cannot map mask {mask.shape} onto {src} {orig.shape}")
        header = orig.header.copy()
        header.set_data_dtype(np.uint8)
        out = nib.Nifti1Image(data.reshape(orig.shape), orig.affine, header)
        out.header.set_slope_inter(1.0, 0.0)
    else:
        if ref.affine is not None:
            affine = ref.affine
        else:
            affine = _default_affine(ref.spacing if ref.array.ndim == 3 else (1.0, *ref.spacing))
        out = nib.Nifti1Image(mask, affine)
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(out, tmp)
