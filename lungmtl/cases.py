"""The cases of a prediction run: what is predicted (a scan or a slice) and what came of it.

Shared by :mod:`lungmtl.inference`, which makes them, and by the report writers
(:mod:`lungmtl.html_report`, :mod:`lungmtl.viewer`), which read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.image import ImageData

#: The message of a case that ``resume`` skips: an earlier run finished it.
DONE_BEFORE = "done before"


@dataclass
class Case:
    """One scan (or slice) to predict.

    Attributes:
        name: folder name under OUT.
        image: the image; ``array`` is (Z, H, W) in the canonical view of :mod:`lungmtl.data.image`.
        lung: the dataset's lung masks (Z, H, W) bool, or None (derived ones are used).
        slice_ids: per-slice labels for slices.csv (slice numbers or file names).
        has_geometry: spacing is real (mm), so volumes in mL can be reported.
        warnings: messages raised while reading.
        read_s: seconds spent reading.
        breaks: (Z,) bool or None: True where slice k does not follow slice k - 1 (a gap in
            the slice numbers), so no run of "consecutive" positive slices spans it.
    """

    name: str
    image: ImageData
    lung: np.ndarray | None
    slice_ids: list[str]
    has_geometry: bool
    warnings: list[str] = field(default_factory=list)
    read_s: float = 0.0
    breaks: np.ndarray | None = None


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
