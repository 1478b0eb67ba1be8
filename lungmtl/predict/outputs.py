"""A case's files: ``mask.nii.gz``, ``slices.csv``, the pictures and report, ``summary.json``.

A case folder is finished when its ``summary.json`` exists and names the same input. Every other
file is written whole into a hidden folder beside the outputs and renamed into place, so a run
that fails halfway replaces nothing; ``summary.json`` comes last.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import write_mask_like
from ..files import write_text
from ..viewer import ViewerData
from . import report
from .case import Outcome, Preprocessed
from .engine import Predictor
from .types import Case, PredictOptions

STAGES = ("read", "preprocess", "model", "postprocess", "write")
#: Hidden folder in a case folder that its files are written to before they are renamed into it.
STAGING_PREFIX = ".writing-"


def rss_mb() -> float:
    """This process's resident memory in MiB (NaN where /proc is not there)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass
class StageClock:
    """Seconds and resident memory after each stage of one case (``STAGES``)."""

    read_s: float = 0.0
    t0: float = field(default_factory=time.perf_counter)
    timing: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timing["read"] = round(self.read_s, 3)
        self.memory["read"] = round(rss_mb(), 1)

    def lap(self, stage: str, start: float) -> float:
        """Record ``stage`` as having run since ``start``; returns now."""
        now = time.perf_counter()
        self.timing[stage] = round(now - start, 3)
        self.memory[stage] = round(rss_mb(), 1)
        return now

    def stamp(self, summary: dict) -> None:
        """Add the timings and memory figures to ``summary``."""
        self.timing["total"] = round(time.perf_counter() - self.t0 + self.read_s, 3)
        summary["timing_s"] = self.timing
        summary["rss_mb_after"] = self.memory
        summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_case(
    predictor: Predictor,
    case: Case,
    out_dir: Path,
    opts: PredictOptions,
    pre: Preprocessed,
    outcome: Outcome,
    clock: StageClock,
    start: float,
) -> dict:
    """Write one case's files into ``out_dir`` (the write stage); returns the summary dict.

    Args:
        predictor: the model (Grad-CAM of the report).
        case: the case.
        out_dir: the case folder.
        opts: the run's options (``report``, ``gradcam``).
        pre: the pre-processed slices (Grad-CAM input).
        outcome: masks, table and summary of the case.
        clock: the case's stage timings, stamped into the summary.
        start: when the write stage began (``time.perf_counter``).
    """
    summary, slices, mask = outcome.summary, outcome.slices, outcome.mask
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{STAGING_PREFIX}*"):  # left by a run that was killed
        shutil.rmtree(old, ignore_errors=True)
    # os.replace is atomic on one file system: each file appears whole or not at all.
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=out_dir) as staging:
        stage = Path(staging)
        write_mask_like(mask, case.image, stage / "mask.nii.gz")
        slices.to_csv(stage / "slices.csv", index=False)
        if opts.dicom_seg and case.image.dicom is not None:
            _dicom_seg(predictor, case, outcome, stage / "seg.dcm")
        if opts.report:
            pictures = {"overlays": report.case_overlay_sheet(case, mask, slices, stage)}
            explained = outcome.top[: opts.gradcam] if opts.gradcam else []
            cams = report.gradcam_maps(predictor.model, pre.images, pre.boxes, explained)
            view = ViewerData.of(case, mask, outcome.lung, outcome.need, cams)
            summary["pictures"] = {k: v.name for k, v in pictures.items()}
            summary["gradcam_slices"] = explained
            summary["report"] = "report.html"
        clock.lap("write", start)
        clock.stamp(summary)
        if opts.report:
            report.write_report(summary, slices, stage, view)
        for f in sorted(stage.iterdir()):
            os.replace(f, out_dir / f.name)
    # Written last and atomically: its presence marks a finished case (see ``resume``).
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default))
    return summary


def _dicom_seg(predictor: Predictor, case: Case, outcome: Outcome, path: Path) -> None:
    """seg.dcm beside a DICOM input; where highdicom refuses the source headers, the case keeps
    its other outputs and the summary says why there is no seg.dcm."""
    from .dicomseg import write_dicom_seg

    try:
        write_dicom_seg(outcome.mask, outcome.lung, case.image, path, predictor.model_name)
        outcome.summary["dicom_seg"] = path.name
    except (ValueError, AttributeError, TypeError) as e:
        outcome.summary["dicom_seg"] = None
        outcome.summary["warnings"].append(f"seg.dcm not written: {type(e).__name__}: {e}")


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")
