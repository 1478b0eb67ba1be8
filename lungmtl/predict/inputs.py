"""Prediction inputs: discovery, case naming, sharding, manifest cases and the resume check.

One *case* per input: a DICOM series folder, a NIfTI (or ``.npy``) volume, a single slice
(PNG/JPEG/TIFF/DICOM file), or, for a folder in the manifest layout, one case per patient.
Case names (folders under OUT) are unique over the whole input list, computed before sharding,
so every shard names every case the same way (``CT``, ``CT_2`` for two inputs named CT).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..data.image import RASTER_SUFFIXES, ImageData, affine_spacing, suffix_of
from ..data.io import read_image
from ..data.manifest import read_manifest
from ..data.sources import load_slice
from ..data.study import has_dicom_below
from ..errors import InputError
from ..files import natural_key
from .describe import INTENSITY, case_name, describe, safe_name
from .slicefolder import id_breaks, read_slice_folder, slice_images
from .study import StudyPlan, is_zip, keep_or_drop, plan_study, study_cases
from .types import Case, CaseResult

#: Mean spread between the R, G and B channels (0..255) above which a picture is not a CT slice.
MAX_COLOUR_SPREAD = 12.0


def _check_not_photo(path: Path) -> None:
    """Refuse colour pictures: CT slices are grey even when stored as RGB (MosMedData JPGs)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "P", "CMYK"):
                return
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    except Exception:  # OSError, DecompressionBombError, ...
        return  # the reader reports unreadable files with its own message
    spread = float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())
    if spread > MAX_COLOUR_SPREAD:
        raise InputError(
            path, f"a colour picture (mean channel spread {spread:.0f}/255), not a CT slice"
        )


def _volume_case(path: Path, allow_gaps: bool) -> Case:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if path.is_file() and suffix_of(path) in RASTER_SUFFIXES:
            _check_not_photo(path)
        data = read_image(path, gaps="warn" if allow_gaps else "error")
    arr = data.array if data.array.ndim == 3 else data.array[None]
    if data.array.ndim == 2:
        # A single slice: its thickness (DICOM SliceThickness) is the affine's z column.
        dz = affine_spacing(data.affine)[0] if data.affine is not None else 1.0
        data = dataclasses.replace(data, array=arr, spacing=(dz, *data.spacing))
    ids = [str(k) for k in range(arr.shape[0])]
    notes = [str(w.message) for w in caught]
    if data.affine is not None and not data.spacing_known:
        notes.append("the file gives no pixel spacing: no volumes in mL")
    case = Case(
        case_name(path),
        data,
        None,
        ids,
        data.affine is not None and data.spacing_known,
        notes,
    )
    case.source = describe(data, path, arr.shape[0])
    return case


def with_spacing(case: Case, spacing: tuple[float, float, float] | None) -> Case:
    """Give a case without geometry the user's (z, y, x) spacing (canonical view axes)."""
    if spacing is None or case.has_geometry:
        return case
    dz, dy, dx = (float(v) for v in spacing)
    affine = np.array([[0, 0, -dx, 0], [0, -dy, 0, 0], [dz, 0, 0, 0], [0, 0, 0, 1]], float)
    case.image = dataclasses.replace(case.image, spacing=(dz, dy, dx), affine=affine)
    case.has_geometry = True
    case.source["spacing"] = f"given: --spacing {dz:g},{dy:g},{dx:g}"
    case.warnings = [w for w in case.warnings if "spacing unknown" not in w]
    return case


def _slice_folder_case(path: Path) -> Case:
    data, ids, notes, breaks, info = read_slice_folder(path, _check_not_photo)
    notes.append("spacing unknown: no volumes in mL (give --spacing z,y,x in mm)")
    case = Case(case_name(path), data, None, ids, False, notes, breaks=breaks)
    case.source = {**info, "spacing": "unknown", "intensity": INTENSITY["8bit"]}
    return case


def _stack_affine(images: list[ImageData]) -> np.ndarray | None:
    """One affine for slices read one by one (DICOM files): z step from first to last origin."""
    if any(im.affine is None for im in images):
        return None
    affine = np.array(images[0].affine, dtype=np.float64)
    if len(images) > 1:
        step = (images[-1].affine[:3, 3] - images[0].affine[:3, 3]) / (len(images) - 1)
        if np.linalg.norm(step) > 1e-6:
            affine[:3, 0] = step
    return affine


def _volume_rows_affine(rows: pd.DataFrame, metas: list[ImageData]) -> np.ndarray | None:
    """The affine of manifest rows that index one volume file at evenly stepped z indices
    (``index`` i0, i0 + d, ...): the volume's affine moved to i0, z step times d; else None."""
    volume = metas[0]
    if volume.affine is None or any(m.path != volume.path for m in metas):
        return None
    index = rows["index"].astype(int).to_numpy()
    steps = np.diff(index)
    if len(steps) and (steps[0] == 0 or not (steps == steps[0]).all()):
        return None
    affine = np.array(volume.affine, dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ np.array([index[0], 0.0, 0.0]) + affine[:3, 3]
    if len(steps):
        affine[:3, 0] *= steps[0]
    return affine


def _slice_order(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str | None]:
    """A patient's manifest rows in slice order, their slice ids, and a note on the order used.

    The ``slice`` column is text (and optional): where every id is a number the rows go in
    numeric order (not "0, 1, 10, 11, 2"); otherwise in natural order of the id, or of the
    image's file name where the id is empty; rows of one volume file then go by ``index``.
    """
    text = rows["slice"].fillna("").astype(str).str.strip()
    files = [Path(str(p)).name for p in rows["image"]]
    index = [int(i) for i in rows["index"]]
    numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
    if numbers.notna().all():
        keys = [
            (float(v), natural_key(f), i) for v, f, i in zip(numbers, files, index, strict=True)
        ]
        note = None
    else:
        keys = [
            (natural_key(t or f), natural_key(f), i)
            for t, f, i in zip(text, files, index, strict=True)
        ]
        note = None
        if len(rows) > 1:
            note = (
                "slices ordered by file name (natural order): the manifest gives no slice numbers"
                if not text.astype(bool).any()
                else "slices ordered by slice id in natural order: not every id is a number"
            )
    order = sorted(range(len(rows)), key=keys.__getitem__)
    ids = [
        text.iloc[k] or (f"{files[k]}[{index[k]}]" if index[k] >= 0 else files[k]) for k in order
    ]
    return rows.iloc[order], ids, note


def _manifest_groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(patient, rows) per (source, patient) of a manifest table, in a fixed order."""
    return [
        (str(patient), rows)
        for (_, patient), rows in table.groupby(["source", "patient"], sort=True)
    ]


def _claim(taken: set[str], name: str) -> str:
    """``name``, or ``name_2``, ``name_3``, ... the first not taken yet; marks it taken."""
    unique, k = name, 1
    while unique in taken:
        k += 1
        unique = f"{name}_{k}"
    taken.add(unique)
    return unique


def _manifest_cases(
    folder: Path,
    table: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    taken: set[str] | None = None,
    done: Callable[[str, Path], CaseResult | None] | None = None,
) -> list[Case | CaseResult]:
    """One case per (source, patient) of a manifest folder, slices in ``slice`` order.

    Args:
        folder: holds manifest.csv.
        table: the manifest as read already (else it is read here).
        names: the case name of each (source, patient) group (see :func:`_plan_names`).
        taken: names in use; names made here (one per slice, below) are added to it.
        done: see :func:`iter_cases`; asked per patient before its slices are read.
    """
    folder = Path(folder).absolute()
    # Labels and infection masks are not used here: a bad one must not refuse the patient.
    table = read_manifest(folder, labels=False) if table is None else table
    taken = set() if taken is None else taken
    groups = _manifest_groups(table)
    if names is None or len(names) != len(groups):  # the manifest changed since it was planned
        names = [_claim(taken, safe_name(patient)) for patient, _ in groups]
    out: list[Case | CaseResult] = []
    for (patient, rows), name in zip(groups, names, strict=True):
        if done is not None and (earlier := done(name, folder)) is not None:
            out.append(earlier)
            continue
        try:
            t = time.perf_counter()
            rows, ids, note = _slice_order(rows)
            notes = [note] if note else []
            slices, lungs, metas = [], [], []
            for _, row in rows.iterrows():
                arrays = load_slice(row)
                slices.append(arrays.image)
                lungs.append(arrays.lung_mask)
                metas.append(read_image(row["image"]))
            shapes = {s.shape for s in slices}
            kinds = {m.kind for m in metas}
            if len(shapes) > 1 or len(kinds) > 1:
                # A manifest's "patient" groups pictures for patient-level splits, and image-only
                # data sets (pictures of one patient cut from papers, of any size) are valid
                # manifests that train fine: refusing the patient would lose every valid slice.
                # So each slice is predicted on its own, as a single picture would be, with
                # unknown spacing (1 mm, not its pixel count) and a warning in its summary.
                what = sorted(shapes) if len(shapes) > 1 else sorted(kinds)
                warn = (
                    f"slices of patient {patient} differ in size/kind {what}: each slice "
                    "predicted on its own (no scan verdict over them)"
                )
                for s, lung, meta, sid in zip(slices, lungs, metas, ids, strict=True):
                    data = ImageData(s[None], meta.kind, (1.0, 1.0, 1.0), None, folder)
                    lung3 = None if lung is None else lung[None]
                    sname = _claim(taken, f"{name}_{safe_name(sid)}")
                    out.append(Case(sname, data, lung3, [sid], False, [*notes, warn]))
                continue
            if metas[0].array.ndim == 2:
                affine = _stack_affine(metas)
            else:
                affine = _volume_rows_affine(rows, metas)
            vol = np.stack(slices)
            spacing = (1.0, 1.0, 1.0)
            if affine is not None:
                spacing = affine_spacing(affine)
            data = ImageData(vol, metas[0].kind, spacing, affine, folder)
            lung = np.stack(lungs) if all(m is not None for m in lungs) else None
            read_s = time.perf_counter() - t
            breaks = id_breaks(ids)
            if breaks is not None and breaks.any():
                notes.append(
                    f"slice numbers jump at {int(breaks.sum())} place(s): runs of consecutive "
                    "positive slices do not span a jump"
                )
            physical = affine is not None and all(m.spacing_known for m in metas)
            case = Case(name, data, lung, ids, physical, notes, read_s, breaks)
            case.source = {
                "kind": "manifest patient",
                "slices": len(ids),
                "spacing": "image files" if physical else "unknown",
                "intensity": INTENSITY[metas[0].kind],
            }
            out.append(case)
        except InputError as e:
            out.append(CaseResult(name, str(folder), False, str(e)))
        except Exception as e:  # one patient's failure must not stop the others
            out.append(CaseResult(name, str(folder), False, failure_message(folder, e, patient)))
    return out


def failure_message(where: str | Path, e: BaseException, what: str = "") -> str:
    """The message of a case failed by an unexpected exception: where, what, the exception."""
    about = f" ({what})" if what else ""
    return f"{where}{about}: {type(e).__name__}: {e}"


def _plan_names(
    paths: Sequence[Path], series_rule: str = "all"
) -> tuple[list[tuple[list[str], pd.DataFrame | StudyPlan | None]], set]:
    """Case names for every input of the whole list, before sharding.

    Every shard computes the same names from the same list, so inputs ``p1/CT`` and ``p2/CT``
    in different shards get ``CT`` and ``CT_2`` rather than both writing ``OUT/CT``. Manifest
    folders are read here (the table only, no images) to name one case per patient; DICOM
    folders and zips are scanned (headers only, kept for reading) to name one case per series.

    Returns:
        Per input: its case names (one, or one per manifest patient or kept series) and its
        manifest table or study plan (None for other inputs, or where the manifest cannot be
        read: its shard reports that); and the set of all names.
    """
    taken: set[str] = set()
    plan: list[tuple[list[str], pd.DataFrame | StudyPlan | None]] = []
    for path in paths:
        table = None
        bases = [case_name(path)]
        if path.is_dir() and (path / "manifest.csv").is_file():
            try:
                table = read_manifest(path, labels=False)
                bases = [safe_name(patient) for patient, _ in _manifest_groups(table)]
            except Exception:  # reported when its shard reads it
                table = None
        elif is_zip(path) or (path.is_dir() and (not slice_images(path) or has_dicom_below(path))):
            study = plan_study(path, series_rule, taken, _claim)
            plan.append((study.names, study))
            continue
        plan.append(([_claim(taken, b) for b in bases], table))
    keep_or_drop([p for _, p in plan if isinstance(p, StudyPlan)])
    return plan, taken


def iter_cases(
    inputs: Sequence[str | Path],
    allow_gaps: bool = False,
    shard: tuple[int, int] = (0, 1),
    done: Callable[[str, Path], CaseResult | None] | None = None,
    series_rule: str = "all",
) -> Iterator[Case | CaseResult]:
    """Read the inputs into cases one at a time (one volume in memory at once).

    An input that cannot be read (for any reason but Ctrl-C) becomes a failed
    :class:`CaseResult`; names are unique over the whole of ``inputs``, shards included.

    Args:
        inputs: DICOM folders (a series, a study, a CD) and .zip files of them, manifest
            folders, folders of slice images, NIfTI/.npy volumes, slice files.
        allow_gaps: accept DICOM series with missing slices.
        shard: (k, n): read only inputs k, k+n, k+2n, ... (names still come from all inputs).
        done: called with a case's name and input before it is read; a result it returns (a
            case finished before, see ``resume``) is yielded instead of reading the input.
        series_rule: which series of a DICOM study: "all", "one" or a series UID or number
            (:func:`lungmtl.data.study.choose`).
    """
    paths = [Path(p) for p in inputs]
    plan, taken = _plan_names(paths, series_rule)
    k, n = shard
    for i, (_, p) in enumerate(plan):  # another shard reads these: free them now
        if isinstance(p, StudyPlan) and i % n != k:
            p.close()
    for i in range(k, len(paths), n):
        path = paths[i]
        names, table = plan[i]
        t = time.perf_counter()
        try:
            if not path.exists():
                raise InputError(path, "input not found")
            if path.is_dir() and (path / "manifest.csv").is_file():
                yield from _manifest_cases(path, table, names, taken, done)
                continue
            if isinstance(table, StudyPlan):
                yield from study_cases(table, allow_gaps, done)
                continue
            if done is not None and (earlier := done(names[0], path.absolute())) is not None:
                yield earlier
                continue
            if path.is_dir() and slice_images(path):
                case = _slice_folder_case(path)
            else:
                case = _volume_case(path, allow_gaps)
            case.read_s = time.perf_counter() - t
        except InputError as e:
            yield CaseResult(names[0], str(path), False, str(e))
            continue
        except Exception as e:  # e.g. out of memory: this input fails, not the run
            yield CaseResult(names[0], str(path), False, failure_message(path, e, "reading"))
            continue
        case.name = names[0]
        yield case


def finished_summary(
    out_dir: Path,
    name: str,
    source: str | Path,
    same: dict | None = None,
    series_uid: str | None = None,
) -> dict | None:
    """The summary in ``out_dir`` of case ``name`` if an earlier run finished it on ``source``
    (and, where given, with the same values of the summary keys in ``same``: the checkpoint,
    the calibration; and of the same DICOM series ``series_uid``).

    A summary for another input (the input list changed, so a name now means another scan), of
    another model or calibration, or one that cannot be read is no reason to skip: the case is
    predicted again.
    """
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("case") != name:
        return None
    if any(summary.get(k) != v for k, v in (same or {}).items()):
        return None
    read = summary.get("input", "")
    uid = read.get("series_uid") if isinstance(read, dict) else None
    if series_uid is not None and uid != series_uid:
        return None  # another series of the same study folder (--series changed)
    read = read.get("path", "") if isinstance(read, dict) else read
    ok = os.path.normpath(str(read)) == os.path.normpath(str(source))
    return summary if ok else None
