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

from ..data.archive import unpack_zip
from ..data.dicom import series_volume
from ..data.study import Series, Study, choose, scan_study
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
    """What one DICOM folder or zip holds: names of its kept series, the choice, the notes."""

    path: Path
    rule: str
    names: list[str]
    study: Study | None = None
    choice: str = ""
    error: InputError | None = None
    tmp: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        """Remove a zip's unpacked files and free the headers."""
        self.study = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _open(path: Path, rule: str) -> tuple[Study, str, tempfile.TemporaryDirectory | None]:
    tmp, notes = None, []
    root = path
    if is_zip(path):
        tmp, notes = unpack_zip(path)
        root = Path(tmp.name)
    try:
        if path.is_dir() and not any(path.iterdir()):
            raise InputError(path, "empty folder")
        study = scan_study(root)
        study.root = path
        study.notes = notes + study.notes
        if not study.series:
            what = "zip holds" if tmp else "folder holds"
            raise InputError(path, f"{what} no DICOM image files (nor slice images)")
        choice = choose(study, rule)
        if not study.kept():
            found = "; ".join(f"{_label(s)}: {s.skipped}" for s in study.series)
            raise InputError(path, f"no axial CT image series to predict: {found}")
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return study, choice, tmp


def plan_study(path: Path, rule: str, taken: set[str], claim: Callable) -> StudyPlan:
    """Scan ``path`` and name its kept series (unique against ``taken`` via ``claim``)."""
    try:
        study, choice, tmp = _open(path, rule)
    except InputError as e:
        return StudyPlan(path, rule, [claim(taken, case_name(path))], error=e)
    kept = study.kept()
    if len(kept) == 1:
        bases = [case_name(path)]
    else:
        bases = [safe_name(series_name(s, case_name(path))) for s in kept]
    return StudyPlan(path, rule, [claim(taken, b) for b in bases], study, choice, tmp=tmp)


def keep_or_drop(plans: list[StudyPlan]) -> None:
    """Free the headers of the plans beyond :data:`KEEP_HEADERS` (read again later)."""
    kept = 0
    for plan in plans:
        if plan.study is None:
            continue
        n = sum(len(s.items) for s in plan.study.series)
        if kept + n > KEEP_HEADERS and plan.tmp is None:
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
    """The cases of a planned DICOM folder or zip, one kept series at a time."""
    path = plan.path.absolute()
    try:
        if plan.error is None and plan.study is None:  # headers dropped: read them again
            plan.study, plan.choice, plan.tmp = _open(plan.path, plan.rule)
        if plan.error is not None:
            yield CaseResult(plan.names[0], str(plan.path), False, str(plan.error))
            return
        study = plan.study
        listing = [s.describe() for s in study.series]
        for series, name in zip(study.kept(), plan.names, strict=False):
            if done is not None and (earlier := done(name, path)) is not None:
                yield earlier
                continue
            try:
                case = _series_case(series, path, allow_gaps)
            except InputError as e:
                yield CaseResult(name, str(plan.path), False, str(e))
                continue
            except Exception as e:  # one series' failure must not stop the study's others
                what = f"{type(e).__name__}: {e}"
                yield CaseResult(name, str(plan.path), False, f"{path} ({_label(series)}): {what}")
                continue
            finally:
                series.items = []  # its headers live on in the case (seg.dcm) or nowhere
            case.name = name
            case.warnings = [n for n in study.notes if "left out" in n] + case.warnings
            case.source["study"] = {
                "series_choice": plan.choice,
                "series": listing,
                **({"notes": study.notes} if study.notes else {}),
            }
            yield case
    finally:
        plan.close()


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
