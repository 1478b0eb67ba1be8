"""NIfTI images: read into the canonical view, with the file's own affine kept for writing back."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .image import canonical_transform, check_finite, to_canonical


def load_nifti(
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
    data = as_3d(data, path)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    check_finite(data, path)
    return (*to_canonical(data, affine, path), affine)


def nifti_states_spacing(path: Path) -> bool:
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


def as_3d(data: np.ndarray, path: Path) -> np.ndarray:
    # Trailing singleton axes (a 4D file with one time point) are harmless; anything else is not.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(path, f"expected a 2D or 3D image, got shape {data.shape}")
    return data


def nifti_canonical_shape(path: Path) -> tuple[int, ...]:
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
    transform = canonical_transform(affine, path)
    return tuple(shape[int(ax)] for ax in np.argsort(transform[:, 0]))
