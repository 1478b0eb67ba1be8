"""Source adapters: manifests and official public layouts -> one slice table (a DataFrame).

One row per axial slice, columns :data:`COLUMNS` (see docs/data-format.md):

* ``image``: absolute path; ``index``: z index inside a volume file, -1 for a 2D file;
* ``mask``, ``mask_multiclass``, ``lung_mask``: absolute paths or ``""`` (volume masks share
  ``index``);
* ``label`` (``infected``/``healthy``), ``label_level`` (``slice``/``study``), ``patient``,
  ``slice``, ``source`` (the dataset: manifest folder or adapter name), ``subsource`` (the
  manifest's own ``source`` column, or the adapter's sub-collection), ``split``, ``has_mask``.

``source`` is what per-source results group by; ``subsource`` is kept apart because in some
manifests it encodes the label (MosMed ``mosmed-CT-0`` = healthy), so grouping by it would leak.

Label conventions for mask files: values 1 and 2 (ground-glass, consolidation) are infection;
0 is background and 3 and above (MedSeg's pleural effusion) are not infection. A volume slice is
``infected`` (slice level) when its infection mask is non-empty.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pydicom

from ..errors import InputError
from .io import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    dicom_numbers,
    dicom_series,
    read_image,
    read_mask,
    suffix_of,
    volume_shape,
)

COLUMNS = [
    "image",
    "index",
    "mask",
    "mask_multiclass",
    "lung_mask",
    "label",
    "label_level",
    "patient",
    "slice",
    "source",
    "subsource",
    "split",
    "has_mask",
]
LABELS = ("infected", "healthy")
LABEL_LEVELS = ("slice", "study")
INFECTION_LABELS = (1, 2)
MANIFEST = "manifest.csv"
#: The columns of manifest.csv in their documented order (docs/data-format.md).
MANIFEST_COLUMNS = (
    "image",
    "mask",
    "mask_multiclass",
    "lung_mask",
    "label",
    "label_level",
    "patient",
    "slice",
    "source",
    "split",
)
MANIFEST_REQUIRED = ("image", "label", "patient")
MANIFEST_OPTIONAL = (
    "index",
    "mask",
    "mask_multiclass",
    "lung_mask",
    "label_level",
    "slice",
    "source",
    "split",
)


def empty_table() -> pd.DataFrame:
    """A slice table with no rows (the right columns and dtypes)."""
    return _table([])


def _table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    for c in COLUMNS:
        if c == "index":
            df[c] = df[c].astype(np.int64)
        elif c == "has_mask":
            df[c] = df[c].astype(bool)
        else:
            df[c] = df[c].astype(object).fillna("").astype(str)
    return df.reset_index(drop=True)


def _abs(path: Path) -> str:
    # normpath, not resolve(): keep the user's symlinked data folders recognisable.
    return os.path.normpath(str(path.absolute()))


# ---------------------------------------------------------------- manifests


def _read_one_manifest(folder: Path, labels: bool = True, check_files: bool = True) -> pd.DataFrame:
    csv = folder / MANIFEST
    try:
        m = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(csv, f"cannot read manifest ({e})") from None
    m.columns = [c.strip() for c in m.columns]
    required = MANIFEST_REQUIRED if labels else ("image", "patient")
    missing = [c for c in required if c not in m.columns]
    if missing:
        raise InputError(csv, f"missing columns {missing}; has {list(m.columns)}")
    for c in MANIFEST_OPTIONAL:
        if c not in m.columns:
            m[c] = ""
    rows = []
    seen: dict[tuple[str, int], int] = {}
    for i, r in enumerate(m.to_dict("records"), start=1):  # row 1 = first data line
        r = {k: str(v).strip() for k, v in r.items()}
        label = r.get("label", "").lower()
        level = r["label_level"].lower() or "slice"
        if not labels:  # prediction: labels and infection masks are not used, so not checked
            r["mask"] = r["mask_multiclass"] = ""
        elif label not in LABELS:
            raise InputError(csv, f"label {r['label']!r} is not one of {LABELS}", row=i)
        elif level not in LABEL_LEVELS:
            raise InputError(csv, f"label_level {r['label_level']!r} not one of {LABEL_LEVELS}", i)
        if not r["image"]:
            raise InputError(csv, "empty image path", row=i)
        if not r["patient"]:
            raise InputError(csv, "empty patient id (needed for patient-level splits)", row=i)
        try:
            index = int(r["index"]) if r["index"] else -1
        except ValueError:
            raise InputError(csv, f"index {r['index']!r} is not an integer", row=i) from None
        paths = {}
        for col in ("image", "mask", "mask_multiclass", "lung_mask"):
            if not r[col]:
                paths[col] = ""
                continue
            p = folder / r[col]
            if check_files and not p.exists():
                raise InputError(csv, f"{col} file not found: {p}", row=i)
            paths[col] = _abs(p)
        key = (paths["image"], index)
        if key in seen:
            raise InputError(csv, f"image {r['image']} repeats row {seen[key]}", row=i)
        seen[key] = i
        rows.append(
            {
                **paths,
                "index": index,
                "label": label,
                "label_level": level,
                "patient": r["patient"],
                "slice": r["slice"],
                "source": folder.name,
                "subsource": r["source"] or folder.name,
                "split": r["split"],
                "has_mask": bool(paths["mask"]),
            }
        )
    if not rows:
        raise InputError(csv, "manifest has no rows")
    return _table(rows)


def read_manifest(
    folder: str | Path, *, labels: bool = True, check_files: bool = True
) -> pd.DataFrame:
    """Read a folder in the manifest layout, or a folder of such folders (concatenated).

    Args:
        folder: holds ``manifest.csv`` (its paths relative to the folder), or sub-folders that do.
        labels: False for prediction: the label columns are neither required nor checked and
            the infection masks are left out (lung masks are kept).
        check_files: False keeps rows whose files are missing, for the reader to report (and
            ``skip_bad`` to skip) with the other unreadable slices.

    Returns:
        The slice table. ``source`` = the manifest's folder name; ``subsource`` = its ``source``
        column.

    Raises:
        InputError: naming the manifest and row, for missing columns, unknown label/label_level,
            missing files, duplicated images or an empty patient id.
    """
    folder = Path(folder).absolute()
    if (folder / MANIFEST).is_file():
        return _read_one_manifest(folder, labels, check_files)
    subs = (
        sorted(p for p in folder.iterdir() if (p / MANIFEST).is_file()) if folder.is_dir() else []
    )
    if not subs:
        raise InputError(folder, f"no {MANIFEST} here or in its sub-folders")
    return pd.concat([_read_one_manifest(s, labels, check_files) for s in subs], ignore_index=True)


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
                "image": _abs(image),
                "index": z,
                "mask": _abs(mask) if mask else "",
                "mask_multiclass": _abs(mask) if mask and multiclass else "",
                "lung_mask": _abs(lung_mask) if lung_mask else "",
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
        (p for p in folder.iterdir() if suffix_of(p) in (".nii", ".nii.gz")), key=_natural
    )


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


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
    return _table(rows)


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
    return _table(rows)


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
    return _table(rows)


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
    return _table(rows)


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
            key=lambda p: _natural(p.relative_to(folder)),
        )
        for f in files:
            rel = f.relative_to(root).as_posix()
            rows.append(
                {
                    "image": _abs(f),
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
    return _table(rows)


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
        for _, files in sorted(dicom_series(folder).items()):
            head = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
            patient = str(head.get("PatientID", "") or folder.name)
            order = _dicom_order(files)
            for rank, f in enumerate(order):
                rows.append(
                    {
                        "image": _abs(f),
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
    return _table(rows)


def _dicom_order(files: list[Path]) -> list[Path]:
    """Files sorted along the slice normal (InstanceNumber where positions are missing)."""
    keys = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        try:  # missing or malformed geometry (wrong count, text) falls back to InstanceNumber
            iop = dicom_numbers(ds, "ImageOrientationPatient", 6, f)
            ipp = dicom_numbers(ds, "ImagePositionPatient", 3, f)
            if iop is None or ipp is None:
                raise ValueError
            keys.append((0, float(np.dot(ipp, np.cross(iop[:3], iop[3:])))))
        except ValueError:  # InputError included
            try:
                keys.append((1, float(ds.get("InstanceNumber", i) or i)))
            except (TypeError, ValueError):
                keys.append((1, float(i)))
    return [f for _, f in sorted(zip(keys, files, strict=True), key=lambda t: t[0])]


# ---------------------------------------------------------------- detection + loading

ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "manifest": read_manifest,
    "covid19-ct-seg": from_covid19_ct_seg,
    "medseg100": from_medseg100,
    "medseg9": from_medseg9,
    "mosmed": from_mosmed,
    "class-folders": from_class_folders,
    "dicom-infected": lambda root: from_dicom_folder(root, label="infected"),
    "dicom-healthy": lambda root: from_dicom_folder(root, label="healthy"),
}


def detect_layout(path: str | Path) -> str:
    """The layout name (a key of :data:`ADAPTERS`) of a folder.

    DICOM folders are never auto-detected (they carry no label): name them
    ``dicom-infected``/``dicom-healthy``.
    """
    p = Path(path)
    if not p.is_dir():
        raise InputError(p, "not a folder")
    if (p / MANIFEST).is_file() or any((s / MANIFEST).is_file() for s in p.iterdir()):
        return "manifest"
    if (p / "COVID-19-CT-Seg_20cases").is_dir():
        return "covid19-ct-seg"
    if (p / "tr_im.nii.gz").is_file():
        return "medseg100"
    if (p / "rp_im").is_dir():
        return "medseg9"
    if (p / "studies").is_dir():
        return "mosmed"
    subs = [s for s in p.iterdir() if s.is_dir() and not s.name.startswith(".")]
    if subs and all(class_of_folder(s.name) for s in subs):
        return "class-folders"
    raise InputError(
        p,
        "unknown data layout; known layouts: "
        + ", ".join(ADAPTERS)
        + " (see docs/data-format.md; DICOM folders need 'dicom-infected:PATH' or "
        "'dicom-healthy:PATH')",
    )


def _parse(item: str | Path | tuple[str, str | Path]) -> tuple[str | None, Path]:
    if isinstance(item, tuple):
        layout, path = item
        return layout, Path(path)
    text = str(item)
    head, sep, tail = text.partition(":")
    if sep and head in ADAPTERS:  # "layout:path" (a string form usable in YAML configs)
        return head, Path(tail)
    return None, Path(text)


def absolute_source(text: str, layouts: bool = True) -> str:
    """A source (``"layout:path"`` or a path) with a relative path made absolute against the
    working directory; paths starting with ``~`` are kept as written.

    Args:
        text: the source as a config holds it.
        layouts: read a ``layout:`` prefix (False for a plain path such as the cache folder).
    """
    layout, path = _parse(text) if layouts else (None, Path(text))
    raw = str(text).partition(":")[2] if layout else str(text)
    if not raw or raw.startswith("~") or path.is_absolute():
        return str(text)
    return f"{layout}:{_abs(path)}" if layout else _abs(path)


def load_sources(
    spec: str | Path | tuple[str, str | Path] | Iterable[str | Path | tuple[str, str | Path]],
    *,
    check_files: bool = True,
) -> pd.DataFrame:
    """Load one or more sources into one slice table.

    Args:
        spec: a path (layout auto-detected), ``"layout:path"``, a ``(layout, path)`` pair, or a
            list of these. Layouts: the keys of :data:`ADAPTERS`.
        check_files: False keeps manifest rows whose files are missing (``skip_bad``: they are
            then skipped and reported with the other unreadable slices).

    Returns:
        The concatenated slice table (:data:`COLUMNS`).

    Raises:
        InputError: for an unknown layout (the message lists the known ones) or a bad source.
    """
    items = [spec] if isinstance(spec, str | Path | tuple) else list(spec)
    if not items:
        raise InputError("sources", "no data sources given")
    tables = []
    for item in items:
        layout, path = _parse(item)
        if not path.exists():
            raise InputError(path, "data source not found")
        layout = layout or detect_layout(path)
        if layout not in ADAPTERS:
            raise InputError(path, f"unknown layout {layout!r}; known: {', '.join(ADAPTERS)}")
        if layout == "manifest":  # rows with missing files kept, to be skipped (skip_bad)
            tables.append(read_manifest(path, check_files=check_files))
        else:
            tables.append(ADAPTERS[layout](path))
    table = pd.concat(tables, ignore_index=True)
    dup = table.duplicated(["image", "index"])
    if dup.any():
        r = table[dup].iloc[0]
        raise InputError(r["image"], "the same slice comes from two sources", row=int(r.name))
    return table


# ---------------------------------------------------------------- reading one row


class SliceArrays(NamedTuple):
    """The arrays of one slice-table row.

    ``image`` float32 (H, W) in HU (``kind == "hu"``) or 0..255 (``"8bit"``); ``mask`` uint8 0/1
    infection; ``mask_multiclass`` uint8 0 background / 1 ground-glass / 2 consolidation;
    ``lung_mask`` bool. Masks are ``None`` where the row has none.
    """

    image: np.ndarray
    kind: str
    mask: np.ndarray | None
    mask_multiclass: np.ndarray | None
    lung_mask: np.ndarray | None


def load_slice(row: Mapping[str, Any]) -> SliceArrays:
    """Read the arrays of one slice-table row (a dict, ``pd.Series`` or namedtuple ``_asdict()``).

    Volumes are read once and cached (see :func:`lungmtl.data.io.read_image`).

    Raises:
        InputError: naming the file(s), for unreadable files, a bad index or a mask whose size
            differs from the image's.
    """
    path = str(row["image"])
    index = int(row.get("index", -1)) if hasattr(row, "get") else int(row["index"])
    data = read_image(path)
    if data.array.ndim == 3 and data.array.shape[0] == 1 and index == -1:
        index = 0  # a single-slice volume file (a 2D NIfTI) listed as a 2D image
    if data.array.ndim == 3:
        if not 0 <= index < data.array.shape[0]:
            raise InputError(path, f"slice index {index} outside 0..{data.array.shape[0] - 1}")
        image = np.array(data.array[index], dtype=np.float32)
    else:
        if index not in (-1, 0):
            raise InputError(path, f"index {index} given for a 2D image")
        image = np.array(data.array, dtype=np.float32)
        index = -1

    def mask_of(col: str) -> np.ndarray | None:
        m = str(row.get(col, "") or "")
        if not m:
            return None
        if data.reoriented and suffix_of(m) not in NIFTI_SUFFIXES:
            raise InputError(
                m,
                f"a {suffix_of(m)} mask holds no orientation, and the image {path} stores its "
                "voxels in another order than lungmtl's radiological view, so the two cannot be "
                "aligned safely: save the mask as NIfTI with the image's geometry",
            )
        labels = read_mask(m, index if index >= 0 else None)
        if labels.ndim == 3 and index < 0:
            raise InputError(m, f"a mask volume for the 2D image {path}")
        if labels.shape != image.shape:
            raise InputError(m, f"mask size {labels.shape} differs from image {path} {image.shape}")
        return labels

    raw = mask_of("mask")
    mask = None if raw is None else np.isin(raw, INFECTION_LABELS).astype(np.uint8)
    multi = mask_of("mask_multiclass")
    if multi is not None:
        multi = np.where(multi <= 2, multi, 0).astype(np.uint8)  # 3+ (effusion) is background
    lung = mask_of("lung_mask")
    return SliceArrays(image, data.kind, mask, multi, None if lung is None else lung > 0)
