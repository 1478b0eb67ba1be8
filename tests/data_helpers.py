"""Helpers shared by the data tests: small image files, manifests, hypothesis slice strategies."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

RNG = np.random.default_rng(1)
HEADER = "image,mask,mask_multiclass,lung_mask,label,label_level,patient,slice,source,split\n"
FAST = settings(max_examples=25, deadline=None)

unit_slices = arrays(
    np.float32,
    st.tuples(st.integers(4, 40), st.integers(4, 40)),
    elements=st.floats(0, 1, allow_nan=False, width=32),
)
label_masks = arrays(
    np.uint8, st.tuples(st.integers(2, 50), st.integers(2, 50)), elements=st.integers(0, 2)
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def read_gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def nii(path: Path, array: np.ndarray) -> None:
    """Stored (x, y, z) with a RAS affine: canonical slice k is ``array[:, :, k]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def volume(z: int = 4) -> np.ndarray:
    return (RNG.normal(size=(6, 5, z)) * 200 - 700).astype(np.float32)


def lesion_mask(z: int, slices: dict[int, int]) -> np.ndarray:
    """A label volume with value ``v`` in slice ``k`` for each ``k: v`` of ``slices``."""
    m = np.zeros((6, 5, z), np.uint8)
    for k, v in slices.items():
        m[2:4, 1:3, k] = v
    return m


def manifest_source(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    png(root / "images" / "a.png", RNG.integers(0, 255, (8, 7)))
    png(root / "images" / "b.png", RNG.integers(0, 255, (8, 7)))
    m = np.zeros((8, 7))
    m[2:4, 2:4] = 255
    png(root / "masks" / "a.png", m)
    png(root / "masks" / "small.png", np.zeros((4, 4)))
    (root / "manifest.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    return root


GOOD_ROWS = [
    "images/a.png,masks/a.png,,,infected,slice,p1,1,src-CT-2,train",
    "images/b.png,,,,healthy,study,p2,,src-CT-0,",
]


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    z: float,
    series: str,
    instance: int,
    slope: float = 1.0,
    intercept: float = -1024.0,
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.7, 0.8),
    **tags,
) -> Path:
    """A minimal uncompressed CT slice (stored value = (HU - intercept) / slope); ``tags`` set
    further attributes after these (None deletes one)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = "P1"
    ds.SeriesInstanceUID = series
    ds.SeriesDescription = "chest"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-100.0, -120.0, z]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_series(folder: Path, zs: list[float], series: str = "1.2.3") -> list[np.ndarray]:
    """Slices whose stored order (file names, InstanceNumber) is the reverse of position order."""
    folder.mkdir(parents=True, exist_ok=True)
    slices = []
    for i, z in enumerate(zs):
        px = RNG.integers(0, 2000, size=(6, 5)).astype(np.uint16)
        write_dicom(folder / f"s{i:02d}.dcm", px, z=z, series=series, instance=len(zs) - i)
        slices.append(px.astype(np.float32) - 1024.0)
    return slices


def write_small_dicom(
    path: Path, z: float, series: str, instance: int, patient: str = "PAT", orientation=None
) -> None:
    """A 4x4 slice at (0, 0, z) whose value tells the instance apart."""
    write_dicom(
        path,
        np.full((4, 4), 24 + instance, np.uint16),
        z=z,
        series=series,
        instance=instance,
        iop=tuple(orientation or (1, 0, 0, 0, 1, 0)),
        spacing=(1, 1),
        PatientID=patient,
        ImagePositionPatient=[0, 0, z],
    )
