"""The manifest layout: a folder whose ``manifest.csv`` lists its slices (docs/data-format.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError
from .table import LABEL_LEVELS, LABELS, abs_path, slice_table

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
            paths[col] = abs_path(p)
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
    return slice_table(rows)


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
