"""What a case is called and what summary.json's ``input`` block says was read and assumed."""

from __future__ import annotations

import re
from pathlib import Path

from ..data.image import RASTER_SUFFIXES, ImageData, suffix_of


def safe_name(name: str) -> str:
    """``name`` with only letters, digits, ``.``, ``_`` and ``-`` (a folder name anywhere)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def case_name(path: Path) -> str:
    """An input's case name: its file or folder name without the image suffix."""
    name = path.name
    for suffix in (".nii.gz", *RASTER_SUFFIXES, ".nii", ".npy", ".dcm", ".zip"):
        if name.lower().endswith(suffix):
            return safe_name(name[: -len(suffix)])
    return safe_name(name)


INTENSITY = {
    "hu": "Hounsfield units",
    "8bit": "8-bit grey as exported (windowed by the exporter); each slice's lung and soft-tissue "
    "levels are mapped onto the training scale",
}


SLICE_SPACING = "DICOM (slice positions, PixelSpacing)"
FRAME_SPACING = "DICOM (per-frame positions and pixel measures)"


def describe(data: ImageData, path: Path, n_slices: int, header=None) -> dict:
    """summary.json's ``input`` for a file or a DICOM series (``header``: a multi-frame
    file's or a series' first header, where ``data`` does not keep them)."""
    if data.dicom is not None or header is not None:
        first = data.dicom.headers[0] if data.dicom is not None else header
        frames = data.dicom is None
        kernel = first.get("ConvolutionKernel", "")
        return {
            "kind": "DICOM multi-frame file" if frames else "DICOM series",
            "series_uid": str(first.get("SeriesInstanceUID", "")),
            "series_description": str(first.get("SeriesDescription", "")),
            "kernel": "\\".join(map(str, kernel))
            if isinstance(kernel, list | tuple)
            else str(kernel),
            "slices": n_slices,
            "spacing": (FRAME_SPACING if frames else SLICE_SPACING)
            if data.spacing_known
            else "unknown",
            "intensity": INTENSITY["hu"] + " (DICOM rescale slope/intercept)",
        }
    suffix = suffix_of(path)
    kind = {".nii": "NIfTI", ".nii.gz": "NIfTI", ".npy": "NumPy array", ".dcm": "DICOM file"}
    why = "" if suffix == ".dcm" else " (guessed: minimum below -200)" if data.kind == "hu" else ""
    if data.kind == "8bit" and suffix not in RASTER_SUFFIXES:
        why = " (guessed: no value below -200)"
    return {
        "kind": "DICOM multi-frame file"
        if suffix == ".dcm" and n_slices > 1
        else kind.get(suffix, "slice image" if suffix in RASTER_SUFFIXES else "DICOM file"),
        "slices": n_slices,
        "spacing": "file header" if data.affine is not None and data.spacing_known else "unknown",
        "intensity": INTENSITY[data.kind] + why,
    }
