"""What every image reader returns (:class:`ImageData`) and the canonical view it is returned in.

Volumes come out in one canonical *radiological axial* view, whatever the file's own voxel order:

* axis 0 (z): inferior -> superior,
* axis 1 (rows): anterior -> posterior,
* axis 2 (columns): patient right -> patient left,

so ``array[z]`` looks like an axial slice on a radiology workstation (patient's right on the
viewer's left, anterior at the top). ``affine`` maps indices of the returned array to RAS+ world
millimetres, so world positions are preserved by the reorientation.

Intensity kind: DICOM is always Hounsfield units; NIfTI and ``.npy`` hold no such flag, so the kind
is guessed (minimum below -200 -> ``"hu"``, else ``"8bit"``); rasters are ``"8bit"``. See
docs/data-format.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel import orientations as ornt

from ..errors import InputError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (*RASTER_SUFFIXES, *NIFTI_SUFFIXES, ".dcm", ".npy")
HU_MIN_THRESHOLD = -200.0
# Voxel-axis codes (nibabel: the world direction an index increases towards) of the canonical view.
CANONICAL_AXCODES = ("S", "P", "L")
CANONICAL_ORNT = ornt.axcodes2ornt(CANONICAL_AXCODES)


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
        dicom: for a DICOM series, its files' headers and stored voxel order
            (:class:`DicomSource`), so that results can be written back as DICOM.
    """

    array: np.ndarray
    kind: str
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    path: Path
    reoriented: bool = False
    spacing_known: bool = True
    dicom: DicomSource | None = None


@dataclass(frozen=True)
class DicomSource:
    """The DICOM files a volume was read from, in the order of its stored slices.

    Attributes:
        headers: each slice's dataset without its pixel data, ordered by position along the
            slice normal (the stored volume's axis 0).
        stored_affine: 4x4 mapping (slice, row, column) indices of the stored pixel grid (before
            the canonical view) to RAS+ world millimetres.
    """

    headers: tuple
    stored_affine: np.ndarray

    def to_stored(self, canonical: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """A (Z, H, W) array in the canonical view (``affine``) back in the stored order, so
        that ``result[k]`` lies on the pixel grid of ``headers[k]``."""
        back = ornt.ornt_transform(
            ornt.io_orientation(affine), ornt.io_orientation(self.stored_affine)
        )
        return np.ascontiguousarray(ornt.apply_orientation(canonical, back))


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
    transform = canonical_transform(affine, Path(path))
    out = ornt.apply_orientation(data, transform)
    new_affine = affine @ ornt.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(out), new_affine


def affine_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Millimetres per voxel along each array axis: the lengths of the affine's columns."""
    return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def check_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(path, "contains NaN or infinite pixel values")


def readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@contextlib.contextmanager
def input_errors(path: Path, what: str) -> Iterator[None]:
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


def reorients(affine: np.ndarray, path: Path) -> bool:
    """Whether :func:`to_canonical` changes the voxel order of a file with this affine."""
    transform = canonical_transform(affine, path)
    return not np.array_equal(transform, [[0, 1], [1, 1], [2, 1]])


def canonical_transform(affine: np.ndarray, path: Path) -> np.ndarray:
    """The axis transform from a file's voxel order to the canonical view, or InputError."""
    with input_errors(path, "unusable affine (sform/qform): cannot tell its axes"):
        if not np.isfinite(affine).all():
            raise ValueError(f"non-finite values in {affine[:3].tolist()}")
        return ornt.ornt_transform(ornt.io_orientation(affine), CANONICAL_ORNT)
