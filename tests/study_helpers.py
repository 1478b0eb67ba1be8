"""DICOM studies as hospitals hand them over, built from a list of single-frame CT datasets:
transfer syntaxes, a second reconstruction, a scout, DICOMDIR/CD layouts, zips, a dose SR and a
secondary capture beside the images, legacy and enhanced multi-frame files."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def uncompressed(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Copies with their pixels decoded (explicit VR little endian)."""
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        out.append(ds)
    return out


def write(folder: Path, datasets, syntax=None, names=None) -> Path:
    """Save each dataset in ``folder`` (``syntax``: RLE, JPEG-LS, deflated or as it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(datasets):
        ds = copy.deepcopy(ds)
        if syntax in (RLELossless, JPEGLSLossless):
            ds.compress(syntax)
        elif syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        name = names[k] if names else f"IM{k:04d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return folder


def reconstruction(datasets, number: int, description: str, kernel: str, thickness=None):
    """The same slices as another series of the same study (new series and instance UIDs)."""
    series = generate_uid()
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.SeriesInstanceUID, ds.SeriesNumber = series, number
        ds.SeriesDescription, ds.ConvolutionKernel = description, kernel
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if thickness is not None:
            ds.SliceThickness = thickness
        out.append(ds)
    return out


def scout(like: pydicom.Dataset) -> pydicom.Dataset:
    """A coronal localizer of another size in ``like``'s series, far above its slices."""
    ds = copy.deepcopy(like)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.ImagePositionPatient = [-250.0, 0.0, 400.0]
    ds.Rows, ds.Columns = 96, 128
    ds.PixelData = np.full((96, 128), 1000, np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 999
    return ds


def _part10(sop_class: str, like: pydicom.Dataset, modality: str, **tags) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    for key in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime"):
        if key in like:
            setattr(ds, key, like.get(key))
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = generate_uid(), modality, 900
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def dose_report(like) -> FileDataset:
    """An X-Ray Radiation Dose SR (no image) of ``like``'s study."""
    return _part10("1.2.840.10008.5.1.4.1.1.88.67", like, "SR", SeriesDescription="Dose Report")


def secondary_capture(like) -> FileDataset:
    """A screenshot of the dose page (RGB secondary capture) of ``like``'s study."""
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[10:20, 10:80] = 255
    ds = _part10(
        "1.2.840.10008.5.1.4.1.1.7", like, "CT", SeriesDescription="Patient Protocol",
        ImageType=["DERIVED", "SECONDARY", "OTHER"], Rows=64, Columns=96, SamplesPerPixel=3,
        PhotometricInterpretation="RGB", PlanarConfiguration=0, BitsAllocated=8, BitsStored=8,
        HighBit=7, PixelRepresentation=0, PixelData=rgb.tobytes(),
    )  # fmt: skip
    return ds


def cd_layout(root: Path, datasets) -> Path:
    """A CD/DVD layout written by pydicom's FileSet: DICOMDIR + PT*/ST*/SE*/IM* files."""
    fs = FileSet()
    for ds in datasets:
        fs.add(ds)
    fs.write(root)
    return root


def zipped(folder: Path, zip_path: Path) -> Path:
    return Path(shutil.make_archive(str(zip_path.with_suffix("")), "zip", folder))


def legacy_multiframe(datasets, series_uid=None) -> hd.legacy.LegacyConvertedEnhancedCTImage:
    """One Legacy Converted Enhanced CT file of the slices (highdicom), frames in their order."""
    return hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=series_uid or generate_uid(),
        series_number=70,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )


def enhanced_multiframe(datasets, series_uid=None) -> pydicom.Dataset:
    """The legacy converted file relabelled as Enhanced CT Image Storage (same functional
    groups: per-frame positions, shared pixel measures and rescale)."""
    ds = legacy_multiframe(datasets, series_uid)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    return ds
