"""One reader interface for CT images and masks: DICOM, NIfTI, PNG/JPEG/TIFF and ``.npy``.

:func:`read_image` dispatches on the file type and returns an :class:`~lungmtl.data.image.ImageData`
in the canonical view (see :mod:`lungmtl.data.image`); :func:`write_mask_like` writes a mask back
in the geometry of the image it was predicted on.

Arrays returned by :func:`read_image` are read-only: they are shared with a small LRU cache so
that reading slice after slice of one volume does not re-read the file. Copy before editing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from ..errors import InputError
from ..files import atomic_path
from .dicom import is_dicom_file, read_dicom_file, read_dicom_series
from .image import (
    CANONICAL_ORNT,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    ImageData,
    affine_spacing,
    check_finite,
    guess_kind,
    input_errors,
    readonly,
    reorients,
    suffix_of,
)
from .nifti import as_3d, load_nifti, nifti_canonical_shape, nifti_states_spacing
from .raster import read_raster

CACHE_SIZE = 4


def _read_uncached(path: Path, series: str | None, gaps: str) -> ImageData:
    if path.is_dir():
        return read_dicom_series(path, series, gaps)
    suffix = suffix_of(path)
    if suffix == ".dcm":
        return read_dicom_file(path)
    if suffix in NIFTI_SUFFIXES:
        vol, affine, stored = load_nifti(path)
        kind = guess_kind(vol)
        known = nifti_states_spacing(path)
        spacing = affine_spacing(affine)
        reoriented = reorients(stored, path)
        return ImageData(readonly(vol), kind, spacing, affine, path, reoriented, known)
    if suffix in RASTER_SUFFIXES:
        arr = read_raster(path, labels=False).astype(np.float32, copy=False)
        return ImageData(readonly(arr), "8bit", (1.0, 1.0), None, path)
    if suffix == ".npy":
        arr = _load_npy(path).astype(np.float32, copy=False)
        return ImageData(readonly(arr), guess_kind(arr), (1.0,) * arr.ndim, None, path)
    if is_dicom_file(path):  # PACS exports name their files without a suffix
        return read_dicom_file(path)
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
    check_finite(arr, path)
    return arr


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as e:
        raise InputError(path, f"cannot open ({e.strerror or e})") from None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=CACHE_SIZE)
def _read_cached(path: Path, stamp: tuple[int, int], series: str | None, gaps: str) -> ImageData:
    with input_errors(path, "cannot read"):  # whatever a reader above let through
        return _read_uncached(path, series, gaps)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _mask_cached(path: Path, stamp: tuple[int, int]) -> np.ndarray:
    with input_errors(path, "cannot read mask"):
        return _read_mask_uncached(path)


def _read_mask_uncached(path: Path) -> np.ndarray:
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        data, _, _ = load_nifti(path, dtype=None)  # masks: keep the stored integers (memory)
    elif suffix in RASTER_SUFFIXES:
        data = read_raster(path, labels=True)
    elif suffix == ".npy":
        data = _load_npy(path)
    else:
        raise InputError(path, f"unknown mask type {suffix!r}; supported: .png/.jpg/.tif/.nii/.npy")
    return readonly(_to_labels(np.asarray(data), path))


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
    check_finite(data, path)
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
        return nifti_canonical_shape(p)
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
        back = ornt.ornt_transform(CANONICAL_ORNT, ornt.io_orientation(orig.affine))
        data = ornt.apply_orientation(mask, back)
        stored = as_3d(np.empty(orig.shape, dtype=np.uint8), src).shape
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
