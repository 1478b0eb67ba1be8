"""Load data sources (a manifest folder, a public layout, a DICOM folder) into one slice table,
and read the arrays of one of its rows.

The table's columns are :data:`lungmtl.data.table.COLUMNS`; the layouts are :data:`ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..errors import InputError
from .image import NIFTI_SUFFIXES, suffix_of
from .io import read_image, read_mask
from .layouts import (
    class_of_folder,
    from_class_folders,
    from_covid19_ct_seg,
    from_dicom_folder,
    from_medseg9,
    from_medseg100,
    from_mosmed,
)
from .manifest import MANIFEST, read_manifest
from .table import INFECTION_LABELS, abs_path

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
    return f"{layout}:{abs_path(path)}" if layout else abs_path(path)


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
