"""Cases from DICOM folders and .zip archives: one case per axial CT series found below them
(a series folder, a PACS study export, a CD with a DICOMDIR), the others skipped with reasons.

Headers are read once, when the run is planned (names must be known before sharding); the
pixels of a series are read when its case is, from the same headers. A folder that holds a
single kept series keeps the folder's name as its case name; the series of a study are named
``patient__study__series``.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..data.archive import unpack_zip, zip_headers
from ..data.dicom import series_volume
from ..data.study import Series, Study, choose, group_headers, scan_study
from ..errors import InputError
from .describe import case_name, describe, safe_name
from .types import Case, CaseResult

#: Headers kept from planning to reading, at most (about 45 kB each); beyond, an input's
#: headers are read again when its cases are (a batch of hundreds of studies).
KEEP_HEADERS = 20_000
#: Longest part (patient, study, series) of a case name.
PART = 24


@dataclasses.dataclass
class StudyPlan:
    """What one DICOM folder or zip holds: the names and SeriesInstanceUIDs of its kept
    series, the choice, and (for a folder) the headers read, kept for reading its cases."""

    path: Path
    rule: str
    names: list[str]
    uids: list[str] = dataclasses.field(default_factory=list)
    study: Study | None = None
    choice: str = ""
    error: InputError | None = None

    def close(self) -> None:
        """Free the headers."""
        self.study = None


def is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _judge(study: Study, rule: str, what: str) -> str:
    """Choose the series to predict; refuse a study with none, naming what it holds."""
    if not study.series:
        raise InputError(study.root, f"{what} holds no DICOM image files (nor slice images)")
    choice = choose(study, rule)
    if not study.kept():
        found = "; ".join(f"{_label(s)}: {s.skipped}" for s in study.series)
        raise InputError(study.root, f"no axial CT image series to predict: {found}")
    return choice


def _scan(path: Path, rule: str) -> tuple[Study, str]:
    """A folder's series (headers kept) or a zip's (headers read from the archive, not kept:
    a zip is unpacked only when its cases are read)."""
    if is_zip(path):
        study = group_headers(path, zip_headers(path))
        return study, _judge(study, rule, "zip")
    if not any(path.iterdir()):
        raise InputError(path, "empty folder")
    study = scan_study(path)
    return study, _judge(study, rule, "folder")


def plan_study(path: Path, rule: str, taken: set[str], claim: Callable) -> StudyPlan:
    """Scan ``path`` and name its kept series (unique against ``taken`` via ``claim``)."""
    try:
        study, choice = _scan(path, rule)
    except InputError as e:
        return StudyPlan(path, rule, [claim(taken, case_name(path))], error=e)
    except Exception as e:  # a header or archive no check foresaw: this input fails, not all
        error = InputError(path, f"cannot read ({type(e).__name__}: {e})")
        return StudyPlan(path, rule, [claim(taken, case_name(path))], error=error)
    kept = study.kept()
    if len(kept) == 1:
        bases = [case_name(path)]
    else:
        bases = [safe_name(series_name(s, case_name(path))) for s in kept]
    names = [claim(taken, b) for b in bases]
    return StudyPlan(
        path, rule, names, [s.uid for s in kept], None if is_zip(path) else study, choice
    )


def keep_or_drop(plans: list[StudyPlan]) -> None:
    """Free the headers of the plans beyond :data:`KEEP_HEADERS` (read again later)."""
    kept = 0
    for plan in plans:
        if plan.study is None:
            continue
        n = sum(len(s.items) for s in plan.study.series)
        if kept + n > KEEP_HEADERS:
            plan.study = None
        else:
            kept += n


def series_name(series: Series, fallback: str) -> str:
    """``patient__study__series`` from the header (PatientID, StudyDate + description or
    StudyID, SeriesNumber + description; each cut to :data:`PART` characters), with
    ``fallback`` for an empty PatientID."""
    ds = series.head

    def text(*keys: str) -> str:
        values = (str(ds.get(k, "") or "").strip() for k in keys)
        return "-".join(v for v in values if v)[:PART]

    patient = text("PatientID") or fallback[:PART]
    study = text("StudyDate", "StudyDescription") or text("StudyID")
    study = study or str(ds.get("StudyInstanceUID", "study"))[-8:]
    number = str(ds.get("SeriesNumber", "") or "").strip()
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    part = "-".join(p for p in (f"S{number}" if number else "", desc) if p)[:PART]
    return f"{patient}__{study}__{part or series.uid[-8:]}"


def _label(series: Series) -> str:
    d = series.describe()
    return f"series {d['number'] or '?'} {d['description']!r} ({d['files']} files)"


def study_cases(
    plan: StudyPlan,
    allow_gaps: bool,
    done: Callable[[str, Path], CaseResult | None] | None = None,
) -> Iterator[Case | CaseResult]:
    """The cases of a planned DICOM folder or zip, one kept series at a time.

    A case finished before (``done``) for the same series is yielded as it is, and a zip whose
    cases are all finished is not unpacked.
    """
    path = plan.path.absolute()
    if plan.error is not None:
        yield CaseResult(plan.names[0], str(plan.path), False, str(plan.error))
        return
    earlier = {}
    for uid, name in zip(plan.uids, plan.names, strict=True):
        result = done(name, path) if done is not None else None
        if result is not None and (result.summary or {}).get("input", {}).get("series_uid") == uid:
            earlier[uid] = result
    if len(earlier) == len(plan.uids):
        yield from earlier.values()
        return
    tmp = None
    try:
        study = plan.study
        if study is None:  # a zip, or headers dropped: read them now
            if is_zip(plan.path):
                tmp, notes = unpack_zip(plan.path)
                study = scan_study(Path(tmp.name))
                study.root, study.notes = plan.path, notes + study.notes
            else:
                study = scan_study(plan.path)
            _judge(study, plan.rule, "zip" if tmp else "folder")
        shown = _shown(tmp, plan.path)
        kept = {s.uid: s for s in study.kept()}
        listing = [s.describe() for s in study.series]
        for uid, name in zip(plan.uids, plan.names, strict=True):
            if uid in earlier:
                yield earlier[uid]
                continue
            series = kept.get(uid)
            if series is None:
                why = f"series {uid} planned but no longer found: the input changed during the run"
                yield CaseResult(name, str(plan.path), False, f"{plan.path}: {why}")
                continue
            try:
                case = _series_case(series, path, allow_gaps)
            except InputError as e:
                yield CaseResult(name, str(plan.path), False, shown(str(e)))
                continue
            except Exception as e:  # one series' failure must not stop the study's others
                what = f"{path} ({_label(series)}): {type(e).__name__}: {e}"
                yield CaseResult(name, str(plan.path), False, shown(what))
                continue
            finally:
                series.items = []  # its headers live on in the case (seg.dcm) or nowhere
            case.name = name
            notes = [shown(n) for n in study.notes]
            case.warnings = [n for n in notes if "left out" in n] + [
                shown(w) for w in case.warnings
            ]
            case.source["study"] = {
                "series_choice": plan.choice,
                "series": listing,
                **({"notes": notes} if notes else {}),
            }
            yield case
    except InputError as e:  # the zip or folder changed since it was planned
        yield CaseResult(plan.names[0], str(plan.path), False, str(e))
    finally:
        plan.close()
        if tmp is not None:
            tmp.cleanup()


def _shown(tmp: tempfile.TemporaryDirectory | None, zip_path: Path) -> Callable[[str], str]:
    """Messages with a zip's temporary folder written as ``ZIP!`` (the folder is gone after)."""
    if tmp is None:
        return lambda text: text
    root = str(Path(tmp.name))
    return lambda text: text.replace(root + "/", f"{zip_path}!").replace(root, f"{zip_path}!")


def _series_case(series: Series, path: Path, allow_gaps: bool) -> Case:
    t = time.perf_counter()
    folder = series.items[0][0].parent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = series_volume(folder, series.items, "warn" if allow_gaps else "error")
    head = series.head
    data = dataclasses.replace(data, path=path)
    n = data.array.shape[0]
    notes = [str(w.message) for w in caught]
    if data.dicom is None:
        notes.append("no seg.dcm for a multi-frame source: mask.nii.gz holds the outline")
    if not data.spacing_known:
        notes.append("the files give no pixel spacing: no volumes in mL")
    ids = [str(k) for k in range(n)]
    case = Case(case_name(path), data, None, ids, data.spacing_known, notes)
    case.source = describe(data, path, n, header=head)
    case.source["series_files"] = len(series.items)
    case.read_s = time.perf_counter() - t
    return case
