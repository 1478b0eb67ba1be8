"""The types of a prediction run: its options, the cases it predicts and what came of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.image import ImageData
from ..errors import InputError
from ..metrics import THRESHOLD
from ..scan_rule import ScanRule

MIN_CONSECUTIVE = 3
ENGINES = ("torch", "onnx")

#: The message of a case that ``resume`` skips: an earlier run finished it.
DONE_BEFORE = "done before"


@dataclass
class Case:
    """One scan (or slice) to predict.

    Attributes:
        name: folder name under OUT.
        image: the image; ``array`` is (Z, H, W) in the canonical view of
            :mod:`lungmtl.data.image`.
        lung: the dataset's lung masks (Z, H, W) bool, or None (derived ones are used).
        slice_ids: per-slice labels for slices.csv (slice numbers or file names).
        has_geometry: spacing is real (mm), so volumes in mL can be reported.
        warnings: messages raised while reading.
        read_s: seconds spent reading.
        breaks: (Z,) bool or None: True where slice k does not follow slice k - 1 (a gap in
            the slice numbers), so no run of "consecutive" positive slices spans it.
        source: what was read and assumed (summary.json's ``input``: kind, series, kernel,
            slices kept and skipped, where the spacing comes from, HU or 8-bit and why).
    """

    name: str
    image: ImageData
    lung: np.ndarray | None
    slice_ids: list[str]
    has_geometry: bool
    warnings: list[str] = field(default_factory=list)
    read_s: float = 0.0
    breaks: np.ndarray | None = None
    source: dict = field(default_factory=dict)


@dataclass
class CaseResult:
    """Outcome of one case: ``ok`` with its summary, or the error message."""

    name: str
    source: str
    ok: bool
    message: str
    out_dir: Path | None = None
    summary: dict | None = None

    def line(self) -> str:
        """One summary line for the terminal."""
        if not self.ok:
            return f"FAILED {self.name}: {self.message}"
        s = self.summary or {}
        ml = s.get("infected_ml")
        vol = f", {ml:.1f} mL" if ml is not None else ""
        pct = s.get("infected_percent_of_lung")
        pct_s = f", {pct:.1f}% of lung" if pct is not None else ""
        before = self.message == DONE_BEFORE  # --resume: finished by an earlier run, not redone
        head, tail = ("done  ", " (finished before)") if before else ("ok    ", "")
        warned = "".join(f"\n       warning: {w}" for w in s.get("warnings") or [])
        return (
            f"{head} {self.name}: {s.get('verdict')} ({s.get('n_positive_slices')}/"
            f"{s.get('n_slices')} slices positive{vol}{pct_s}) -> {self.out_dir}{tail}{warned}"
        )


@dataclass(frozen=True)
class PredictOptions:
    """Settings of a prediction run.

    Args:
        device: "auto", "cpu", "cuda", ...
        batch_size: slices per forward pass.
        threshold: probability threshold for slice labels and masks.
        min_consecutive: positive slices in a row that make a scan infected.
        crf: refine segmentation probabilities with the CRF (:mod:`lungmtl.crf`).
        gradcam: number of most affected slices explained by Grad-CAM (0 = none).
        top_k: number of most affected slices listed in the summary.
        allow_gaps: accept DICOM series with missing slices (with a warning in the summary).
        threads: torch CPU threads (None = torch's default).
        report: write overlays.png, thumbnail.jpg, report.html and OUT/index.html.
        shard: (k, n): predict only inputs k, k+n, k+2n, ... so that n processes (or torchrun
            ranks) share a large batch of scans without overlap.
        resume: skip cases whose ``summary.json`` (written last) already exists for the same
            input; a case folder holding another input's results is predicted again.
        rule: the scan rule (:class:`lungmtl.scan_rule.ScanRule`); None = the one the
            checkpoint carries, else ``min_consecutive`` slices in a row at ``threshold``.
        spacing: (z, y, x) mm for inputs that state none (slice image folders, .npy): volumes
            in mL are then reported, and summary.json says the spacing was given.
        assume_chest: the inputs are chest CT: a case where no lung is found (a slice below or
            above the lungs) is predicted with a warning instead of refused.
        dicom_seg: beside a DICOM series input, also write ``seg.dcm`` (DICOM Segmentation of
            the infection and the lungs on the series' own frames).
        calibration: a site calibration file (``lungmtl calibrate``): P(infected), the slice
            threshold and the scan rule are read from it instead of the checkpoint's.
        series: which series of a DICOM study (folder, CD, zip) to predict: "all" (every axial
            CT series, each its own case), "one" (per study: a lung kernel, then the thinnest
            slices, then the most slices) or a SeriesInstanceUID or SeriesNumber.
        engine: "torch" (eager PyTorch) or "onnx": the model stage through ONNX Runtime on the
            CPU, on the model exported as ``lungmtl export`` does (docs/performance.md);
            Grad-CAM still uses PyTorch.
    """

    device: str = "auto"
    batch_size: int = 16
    threshold: float = THRESHOLD
    min_consecutive: int = MIN_CONSECUTIVE
    crf: bool = False
    gradcam: int = 3
    top_k: int = 5
    allow_gaps: bool = False
    threads: int | None = None
    report: bool = True
    shard: tuple[int, int] = (0, 1)
    resume: bool = False
    engine: str = "torch"
    rule: ScanRule | None = None
    calibration: str | None = None
    dicom_seg: bool = True
    assume_chest: bool = False
    spacing: tuple[float, float, float] | None = None
    series: str = "all"

    def __post_init__(self) -> None:
        # Refused up front, not by every case with an internal message naming its input.
        counts = {"batch_size": 1, "min_consecutive": 1, "gradcam": 0, "top_k": 0}
        for name, least in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(name, f"must be an integer >= {least}, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InputError("threads", f"must be an integer >= 1, got {self.threads!r}")
        if not 0.0 < self.threshold < 1.0:
            raise InputError("threshold", f"must lie in (0, 1), got {self.threshold!r}")
        if self.spacing is not None and (
            len(self.spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in self.spacing)
        ):
            raise InputError("--spacing", f"expected z,y,x in mm, all > 0, got {self.spacing!r}")
        if not isinstance(self.series, str) or not self.series.strip():
            raise InputError("--series", f"expected all, one, a UID or number: {self.series!r}")
