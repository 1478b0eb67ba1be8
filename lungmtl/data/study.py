"""DICOM studies as hospitals hand them over (a PACS export, a CD with a DICOMDIR, an unzipped
anonymiser's archive): every file below a folder read once (header, pixels deferred), grouped
into series, each series kept as axial CT or skipped with the reason, and the reconstructions
of one study chosen by a stated rule.

The DICOMDIR itself is not needed: Part 10 files on media carry their own headers, so a walk of
the folder finds the same series as the directory records, and also those of a CD whose
DICOMDIR is missing or stale.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom

from ..errors import InputError
from .dicom import is_dicom_file, is_localizer, plane_key, read_header

CT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
}
#: SOP class UID prefixes of objects that are not images to predict, and why.
NOT_IMAGES = (
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report (a dose report or measurements): no image"),
    (
        "1.2.840.10008.5.1.4.1.1.7",
        "secondary capture: a picture (a dose page, a screenshot), not CT values",
    ),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state: display settings, no image"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document (PDF/CDA): no image"),
    ("1.2.840.10008.5.1.4.1.1.66", "segmentation or registration: derived, not CT values"),
    ("1.2.840.10008.5.1.4.1.1.481.", "radiotherapy object: no CT image"),
)
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
#: Sharp (lung) reconstruction kernels: GE/Philips names, Siemens B/I/H/Br/Bl/Hr 50 and above,
#: Canon/Toshiba FC5x and FC8x; and series descriptions that say lung.
LUNG_KERNEL = re.compile(
    r"lung|pulm|^(?:[bih][lr]?)(?:[5-9]\d)|^fc[58]\d|^y[abc]$|^l$", re.IGNORECASE
)
LUNG_DESCRIPTION = re.compile(r"lung|pulm|lunge|poumon", re.IGNORECASE)
#: Rules a study's reconstructions are chosen by (``--series``).
SERIES_RULES = ("all", "one")
#: A series whose slice normal is further than this from the body axis is not axial.
MIN_AXIAL_COSINE = 0.8


def _text(ds: pydicom.Dataset, key: str) -> str:
    value = ds.get(key, "")
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value or "").strip()


@dataclass
class Series:
    """One series found in a study: its files with their headers, and whether it is predicted.

    Attributes:
        uid: SeriesInstanceUID (the folder for files that state none).
        items: (file, header) pairs; pixel data not read yet.
        skipped: why the series is not predicted (None: it is).
    """

    uid: str
    items: list[tuple[Path, pydicom.Dataset]] = field(default_factory=list)
    skipped: str | None = None

    @cached_property
    def head(self) -> pydicom.Dataset:
        """A header of the series' slices: of the most common size and orientation among its
        non-localizer images (a scout sorted first must not stand for the series)."""
        images = [ds for _, ds in self.items if not is_localizer(ds)] or [
            ds for _, ds in self.items
        ]
        keys = [plane_key(ds) for ds in images]
        common = max(keys, key=keys.count)
        return images[keys.index(common)]

    @property
    def frames(self) -> int:
        """Slices (files, or the frames of a multi-frame file)."""
        return sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in self.items)

    @property
    def kernel(self) -> str:
        return _text(self.head, "ConvolutionKernel")

    @property
    def thickness(self) -> float | None:
        ds = self.head
        value = ds.get("SliceThickness")
        groups = ds.get("SharedFunctionalGroupsSequence")
        if value in (None, "") and groups:
            measures = groups[0].get("PixelMeasuresSequence")
            value = measures[0].get("SliceThickness") if measures else None
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def is_lung(self) -> bool:
        """A sharp (lung) kernel, or a description that says lung."""
        kernels = [k for k in self.kernel.split("\\") if k]
        return any(LUNG_KERNEL.search(k.strip()) for k in kernels) or bool(
            LUNG_DESCRIPTION.search(_text(self.head, "SeriesDescription"))
        )

    def describe(self) -> dict:
        """summary.json's line for this series."""
        ds = self.head
        return {
            "series_uid": self.uid,
            "number": _text(ds, "SeriesNumber"),
            "description": _text(ds, "SeriesDescription"),
            "modality": _text(ds, "Modality"),
            "kernel": self.kernel,
            "slice_thickness_mm": self.thickness,
            "files": len(self.items),
            "predicted": self.skipped is None,
            **({"skipped": self.skipped} if self.skipped else {}),
        }


@dataclass
class Study:
    """The series found under one input, and what was passed over on the way."""

    root: Path
    series: list[Series]
    notes: list[str]

    def kept(self) -> list[Series]:
        return [s for s in self.series if s.skipped is None]


def _files(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__MACOSX")))
        files += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
    return files


def has_dicom_below(folder: Path) -> bool:
    """Whether a sub-folder (any depth) holds a DICOM file: a study folder that also shows a
    picture or two at its top (a preview, a logo) is a study, not a folder of slice images."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        if Path(root) != Path(folder) and any(is_dicom_file(Path(root) / n) for n in names):
            return True
    return False


def scan_study(root: Path) -> Study:
    """Read the header of every file below ``root`` once and group the DICOM ones by series.

    Non-DICOM files (a README, a viewer program on a CD) are passed over and counted; DICOM
    files that cannot be read are listed in the notes and left out (a gap they leave in a
    series is found when it is read).
    """
    root = Path(root)
    return group_headers(root, (_read(f) for f in _files(root)))


def _read(f: Path) -> tuple[Path, pydicom.Dataset | None, str | None]:
    try:
        return f, read_header(f, strict=is_dicom_file(f) or f.suffix.lower() == ".dcm"), None
    except InputError as e:
        return f, None, str(e)


def group_headers(
    root: Path, headers: Iterable[tuple[Path, pydicom.Dataset | None, str | None]]
) -> Study:
    """Group (file, header or None, error or None) triples by series and judge each series."""
    groups: dict[str, Series] = {}
    other, bad = 0, []
    dicomdir = False
    for f, ds, error in headers:
        if error is not None:
            bad.append(error)
            continue
        if ds is not None and _sop(ds) == MEDIA_DIRECTORY:
            dicomdir = True
            continue
        if ds is None or not _looks_dicom(ds):
            other += 1
            continue
        uid = _text(ds, "SeriesInstanceUID") or _relative(f.parent, root)
        groups.setdefault(uid, Series(uid)).items.append((f, ds))
    notes = ["a DICOMDIR (CD/DVD layout): series found by reading the files below it"] * dicomdir
    if other:
        notes.append(f"{other} file(s) that are not DICOM passed over")
    if bad:
        shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
        notes.append(f"{len(bad)} unreadable DICOM file(s) left out: {shown}")
    series = list(groups.values())
    for s in series:
        s.skipped = skip_reason(s)
    return Study(root, series, notes)


def _relative(folder: Path, root: Path) -> str:
    """A folder named from the input on (stable wherever a zip was unpacked)."""
    try:
        return str(folder.relative_to(root)) or "."
    except ValueError:
        return str(folder)


def _sop(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return _text(ds, "SOPClassUID") or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")


def _looks_dicom(ds: pydicom.Dataset) -> bool:
    """A dataset read with ``force`` from a non-DICOM file has no SOP class nor image."""
    return bool(ds.get("SOPClassUID") or ds.get("Rows") or ds.get("SeriesInstanceUID"))


def skip_reason(series: Series) -> str | None:
    """Why a series is not an axial CT image series to predict; None where it is."""
    ds = series.head
    sop = _sop(ds)
    for prefix, why in NOT_IMAGES:
        if sop.startswith(prefix):
            return why
    modality = _text(ds, "Modality").upper()
    if modality and modality != "CT":
        return f"modality {modality}: lungmtl reads CT only"
    if "Rows" not in ds:
        return "no image (no Rows/Columns)"
    if sop and sop not in CT_CLASSES:
        name = getattr(pydicom.uid.UID(sop), "name", sop)
        return f"{name}: not a CT image"
    types = {str(t).upper() for _, d in series.items for t in d.get("ImageType", [])}
    if all(is_localizer(d) for _, d in series.items):
        return "localizer (scout) images"
    description = _text(ds, "SeriesDescription").lower()
    if "dose" in description and ("SECONDARY" in types or "OTHER" in types):
        return "dose report stored as an image"
    if any(t in ("MIP", "MINIP", "PROJECTION IMAGE", "VOLUME RENDERING") for t in types):
        return "projection (MIP/MinIP/volume rendering): not slices"
    normal = _normal(ds)
    if normal is not None and abs(normal[2]) < MIN_AXIAL_COSINE * np.linalg.norm(normal):
        return "not axial (a coronal or sagittal reformat): the model reads axial slices"
    return None


def _normal(ds: pydicom.Dataset) -> np.ndarray | None:
    """The slice normal from ImageOrientationPatient (of the file, or of the shared or first
    per-frame functional group of a multi-frame file); None where absent or malformed (the
    read names it)."""
    iop = ds.get("ImageOrientationPatient")
    for key in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if iop is None and ds.get(key):
            plane = ds.get(key)[0].get("PlaneOrientationSequence")
            iop = plane[0].get("ImageOrientationPatient") if plane else None
    try:
        values = np.asarray([float(v) for v in iop], float) if iop is not None else None
    except (TypeError, ValueError):
        return None
    if values is None or values.shape != (6,):
        return None
    normal = np.cross(values[:3], values[3:])
    return normal if np.linalg.norm(normal) > 1e-6 else None


def choose(study: Study, rule: str) -> str:
    """Mark the series not predicted under ``rule`` and say what was chosen.

    ``all``: every axial CT series. ``one``: per study, the series with a sharp (lung) kernel
    first, then the thinnest slices, then the most slices. Anything else: the series of that
    SeriesInstanceUID or SeriesNumber.

    Raises:
        InputError: a series asked for that is not among the kept ones.
    """
    kept = study.kept()
    rule = rule.strip()
    if rule == "all":
        return "every axial CT series predicted (--series all)"
    if rule == "one":
        by_study: dict[str, list[Series]] = {}
        for s in kept:
            by_study.setdefault(_text(s.head, "StudyInstanceUID"), []).append(s)
        for group in by_study.values():
            best = min(group, key=_rank)
            for s in group:
                if s is not best:
                    s.skipped = f"another reconstruction chosen (--series one): {_why(best)}"
        return (
            "one series per study (--series one): a sharp (lung) kernel first, then the "
            "thinnest slices, then the most slices"
        )
    wanted = [s for s in kept if rule in (s.uid, _text(s.head, "SeriesNumber"))]
    if not wanted:
        found = ", ".join(f"{_text(s.head, 'SeriesNumber')}: {s.uid}" for s in kept) or "none"
        raise InputError(study.root, f"no axial CT series {rule!r}; found {found}")
    for s in kept:
        if s not in wanted:
            s.skipped = f"not the series asked for (--series {rule})"
    return f"the series asked for (--series {rule})"


def _rank(series: Series) -> tuple:
    thickness = series.thickness
    return (not series.is_lung(), thickness if thickness else 1e9, -series.frames)


def _why(series: Series) -> str:
    kind = "sharp (lung) kernel" if series.is_lung() else "no lung kernel"
    kernel = f"kernel {series.kernel or '?'}, {kind}"
    return (
        f"series {_text(series.head, 'SeriesNumber')} {_text(series.head, 'SeriesDescription')!r}"
        f" ({kernel}, {series.thickness} mm, {series.frames} slices)"
    )
