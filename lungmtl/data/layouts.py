"""Adapters for the official layouts of public COVID-19 CT data sets, class and DICOM folders."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom

from ..errors import InputError
from ..files import natural_key
from .dicom import dicom_series, slice_keys
from .image import IMAGE_SUFFIXES, suffix_of
from .io import read_mask, volume_shape
from .multiframe import is_multiframe
from .table import INFECTION_LABELS, LABELS, abs_path, slice_table

# ---------------------------------------------------------------- official layouts (volumes)


def _volume_rows(
    image: Path,
    *,
    mask: Path | None,
    lung_mask: Path | None,
    multiclass: bool,
    patient: str,
    source: str,
    subsource: str,
    study_label: str | None = None,
    split: str = "",
) -> list[dict[str, Any]]:
    """One row per z slice of a volume; labels from the mask, else ``study_label`` (study level)."""
    shape = volume_shape(image)
    if len(shape) != 3:
        raise InputError(image, f"expected a 3D volume, got shape {shape}")
    infected = None
    if mask is not None:
        labels = read_mask(mask)
        if labels.ndim != 3 or labels.shape != tuple(shape):
            raise InputError(mask, f"mask shape {labels.shape} differs from {image} {shape}")
        infected = np.isin(labels, INFECTION_LABELS).any(axis=(1, 2))
    elif study_label is None:
        raise InputError(image, "no mask and no study label")
    if lung_mask is not None:
        lshape = volume_shape(lung_mask)
        if tuple(lshape) != tuple(shape):
            raise InputError(lung_mask, f"lung mask shape {lshape} differs from {image} {shape}")
    rows = []
    for z in range(shape[0]):
        if infected is not None:
            label, level = ("infected" if infected[z] else "healthy"), "slice"
        else:
            label, level = study_label, "study"
        rows.append(
            {
                "image": abs_path(image),
                "index": z,
                "mask": abs_path(mask) if mask else "",
                "mask_multiclass": abs_path(mask) if mask and multiclass else "",
                "lung_mask": abs_path(lung_mask) if lung_mask else "",
                "label": label,
                "label_level": level,
                "patient": patient,
                "slice": str(z),
                "source": source,
                "subsource": subsource,
                "split": split,
                "has_mask": mask is not None,
            }
        )
    return rows


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _niftis(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if suffix_of(p) in (".nii", ".nii.gz")),
        key=lambda p: natural_key(p.name),
    )


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(path, f"not found: {what}")
    return path


def from_covid19_ct_seg(root: str | Path, name: str = "covid19-ct-seg") -> pd.DataFrame:
    """Zenodo 3757476 (Ma et al.): 20 CT volumes with infection and lung masks.

    Layout: ``COVID-19-CT-Seg_20cases/*.nii.gz``, ``Infection_Mask/*.nii.gz``,
    ``Lung_Mask/*.nii.gz`` (same file names). Patient = case (file name); ``subsource`` =
    ``coronacases`` or ``radiopaedia``; slice labels from the infection mask.
    """
    root = Path(root).absolute()
    cases = _niftis(_require(root / "COVID-19-CT-Seg_20cases", "COVID-19-CT-Seg_20cases/"))
    if not cases:
        raise InputError(root / "COVID-19-CT-Seg_20cases", "no .nii.gz volumes")
    rows = []
    for case in cases:
        mask = _require(root / "Infection_Mask" / case.name, f"infection mask of {case.name}")
        lung = root / "Lung_Mask" / case.name
        stem = _stem(case)
        rows += _volume_rows(
            case,
            mask=mask,
            lung_mask=lung if lung.exists() else None,
            multiclass=False,
            patient=stem,
            source=name,
            subsource=stem.split("_")[0],
        )
    return slice_table(rows)


def from_medseg100(root: str | Path, name: str = "medseg100") -> pd.DataFrame:
    """MedSeg COVID-19 CT segmentation, 100 axial slices from ~40 patients.

    Layout: ``tr_im.nii.gz`` (100 slices) and ``tr_mask.nii.gz`` (0 background, 1 ground-glass,
    2 consolidation, 3 pleural effusion; infection = 1 or 2). ``val_im.nii.gz``, if present, has
    no labels and is left out. Patients are unknown: one id per slice.
    """
    root = Path(root).absolute()
    image = _require(root / "tr_im.nii.gz", "tr_im.nii.gz")
    mask = _require(root / "tr_mask.nii.gz", "tr_mask.nii.gz")
    rows = _volume_rows(
        image, mask=mask, lung_mask=None, multiclass=True, patient="", source=name, subsource=name
    )
    for r in rows:
        r["patient"] = f"{name}-{r['index']}"
    return slice_table(rows)


def from_medseg9(root: str | Path, name: str = "medseg9") -> pd.DataFrame:
    """MedSeg "Covid Dataset 2": 9 Radiopaedia volumes with infection and lung masks.

    Layout: ``rp_im/{1..9}.nii.gz``, ``rp_msk/{i}.nii.gz`` (0..3 like MedSeg 100),
    ``rp_lung_msk/{i}.nii.gz``. Patient = volume.
    """
    root = Path(root).absolute()
    vols = _niftis(_require(root / "rp_im", "rp_im/"))
    if not vols:
        raise InputError(root / "rp_im", "no .nii.gz volumes")
    rows = []
    for v in vols:
        mask = _require(root / "rp_msk" / v.name, f"rp_msk/{v.name}")
        lung = root / "rp_lung_msk" / v.name
        rows += _volume_rows(
            v,
            mask=mask,
            lung_mask=lung if lung.exists() else None,
            multiclass=True,
            patient=f"{name}-{_stem(v)}",
            source=name,
            subsource=name,
        )
    return slice_table(rows)


def from_mosmed(root: str | Path, name: str = "mosmed") -> pd.DataFrame:
    """MosMedData: ``studies/CT-0..CT-4/study_XXXX.nii.gz`` and ``masks/study_XXXX_mask.nii.gz``.

    CT-0 studies are healthy, CT-1..CT-4 infected, at study level; slices of studies with a mask
    get slice-level labels from it. Patient = study; ``subsource`` = the CT-k category (it
    encodes the label: never group results by it).
    """
    root = Path(root).absolute()
    studies = _require(root / "studies", "studies/")
    cats = sorted(p for p in studies.iterdir() if p.is_dir() and re.fullmatch(r"CT-\d", p.name))
    if not cats:
        raise InputError(studies, "no CT-0..CT-4 folders")
    rows = []
    for cat in cats:
        study_label = "healthy" if cat.name == "CT-0" else "infected"
        for vol in _niftis(cat):
            stem = _stem(vol)
            mask = root / "masks" / f"{stem}_mask.nii.gz"
            rows += _volume_rows(
                vol,
                mask=mask if mask.exists() else None,
                lung_mask=None,
                multiclass=False,
                patient=stem,
                source=name,
                subsource=cat.name,
                study_label=study_label,
            )
    return slice_table(rows)


# ---------------------------------------------------------------- image-only layouts

_CLASS_ALIASES = {
    "infected": ("covid", "covid19", "ctcovid", "infected", "positive", "covidpositive"),
    "healthy": (
        "noncovid",
        "noncovid19",
        "ctnoncovid",
        "normal",
        "healthy",
        "negative",
        "covidnegative",
    ),
}


def class_of_folder(name: str) -> str | None:
    """``infected``/``healthy`` for a class-folder name (case, punctuation ignored), else None."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for label, names in _CLASS_ALIASES.items():
        if key in names:
            return label
    return None


def from_class_folders(root: str | Path, name: str | None = None) -> pd.DataFrame:
    """A folder per class (``COVID``/``CT_COVID``/``infected`` vs ``non-COVID``/``normal``/...).

    Image-only, slice-level labels. Patients are unknown, so each image is its own patient: such
    a set cannot be split by patient and neighbouring slices of one scan may land in train and
    test (a ``UserWarning`` says so). Images are found recursively inside each class folder.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise InputError(root, "not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if class_of_folder(p.name) is None]
    if unknown or not folders:
        known = sorted(a for names in _CLASS_ALIASES.values() for a in names)
        raise InputError(
            root, f"unknown class folders {unknown or '(none found)'}; known names: {known}"
        )
    source = name or root.name
    rows = []
    for folder in folders:
        label = class_of_folder(folder.name)
        files = sorted(
            (p for p in folder.rglob("*") if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES),
            key=lambda p: natural_key(p.name),
        )
        for f in files:
            rel = f.relative_to(root).as_posix()
            rows.append(
                {
                    "image": abs_path(f),
                    "index": -1,
                    "label": label,
                    "label_level": "slice",
                    "patient": f"{source}/{rel}",
                    "slice": "",
                    "source": source,
                    "subsource": folder.name,
                    "has_mask": False,
                }
            )
    if not rows:
        raise InputError(root, "class folders hold no images")
    warnings.warn(
        f"{root}: class-folder images carry no patient ids; each image is its own patient, so "
        "splits cannot keep a patient's slices together",
        stacklevel=2,
    )
    return slice_table(rows)


def from_dicom_folder(
    root: str | Path, label: str | None = None, name: str | None = None
) -> pd.DataFrame:
    """Every DICOM series under ``root`` (searched recursively), grouped by patient.

    Args:
        root: a folder of DICOM files (any depth).
        label: ``"infected"`` or ``"healthy"`` for every series (study level); required.
        name: the ``source`` name (default: the folder's name).

    Returns:
        One row per DICOM file (``index`` -1), ``slice`` = its rank along its series' slice
        normal, ``patient`` = ``PatientID`` (the folder's name where it is empty), so every
        series of one person (a lung and a soft-tissue reconstruction of one scan, a follow-up)
        lands in the same split; ``subsource`` = the SeriesDescription.
    """
    root = Path(root).absolute()
    if label not in LABELS:
        raise InputError(root, "DICOM folders carry no labels: give label='infected' or 'healthy'")
    source = name or root.name
    rows = []
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    for folder in folders:
        for _, items in sorted(dicom_series(folder).items()):
            head = items[0][1]
            if any(is_multiframe(ds) for _, ds in items):
                raise InputError(
                    items[0][0],
                    "a multi-frame CT file: DICOM folder layouts index one slice per file "
                    "(convert it to single-frame files, or predict it with lungmtl predict)",
                )
            patient = str(head.get("PatientID", "") or folder.name)
            order = _dicom_order(items)
            for rank, f in enumerate(order):
                rows.append(
                    {
                        "image": abs_path(f),
                        "index": -1,
                        "label": label,
                        "label_level": "study",
                        "patient": patient,
                        "slice": str(rank),
                        "source": source,
                        "subsource": str(head.get("SeriesDescription", "") or ""),
                        "has_mask": False,
                    }
                )
    if not rows:
        raise InputError(root, "no DICOM series found")
    return slice_table(rows)


def _dicom_order(items: list[tuple[Path, pydicom.Dataset]]) -> list[Path]:
    """Files in slice order (:func:`lungmtl.data.dicom.slice_keys`, lenient: headers only)."""
    keys, _ = slice_keys(items, strict=False)
    return [items[i][0] for i in np.argsort(keys, kind="stable")]
