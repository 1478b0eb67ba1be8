"""The scan-level verdict: from per-slice outputs to "infected" or "healthy" for a whole scan.

Besides a run of consecutive positive slices, the rule can ask for a scan score and a minimum
infected share of the lung, so that scattered slice false positives on a long healthy scan make no
verdict; a shipped model carries the values chosen on validation (``benchmarks/scan_rule.py``,
docs/model-card.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .metrics import THRESHOLD


def longest_run(flags: np.ndarray, breaks: np.ndarray | None = None) -> int:
    """Length of the longest run of True values (a run restarts where ``breaks`` is True)."""
    gaps = np.zeros(len(flags), bool) if breaks is None else np.asarray(breaks, dtype=bool)
    best = run = 0
    for f, gap in zip(np.asarray(flags, dtype=bool), gaps, strict=True):
        run = (1 if gap else run + 1) if f else 0
        best = max(best, run)
    return best


@dataclass(frozen=True)
class ScanRule:
    """Infected when all three hold: a run of ``min_run`` consecutive slices with P(infected) >=
    ``slice_threshold``; a scan score (mean of the ``top_k`` highest slice probabilities) >=
    ``scan_threshold``; an infected share of the lung >= ``min_lung_percent``.

    The default is lungmtl's earlier rule (3 consecutive slices at 0.5, nothing else).
    """

    slice_threshold: float = THRESHOLD
    min_run: int = 3
    top_k: int = 3
    scan_threshold: float = 0.0
    min_lung_percent: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.slice_threshold <= 1.0 or not 0.0 <= self.scan_threshold <= 1.0:
            raise ValueError("slice_threshold and scan_threshold must lie in [0, 1]")
        if self.min_run < 1 or self.top_k < 1:
            raise ValueError("min_run and top_k must be >= 1")
        if not 0.0 <= self.min_lung_percent <= 100.0:
            raise ValueError("min_lung_percent must lie in [0, 100]")

    def scan_score(self, p_infected: np.ndarray) -> float:
        """Mean of the ``top_k`` highest slice probabilities (all of them in a shorter scan)."""
        p = np.sort(np.asarray(p_infected, dtype=float))[::-1]
        return float(p[: self.top_k].mean()) if len(p) else 0.0

    def decide(
        self,
        p_infected: np.ndarray,
        lung_percent: float | None,
        breaks: np.ndarray | None = None,
    ) -> dict:
        """The verdict with what it rests on (for summary.json)."""
        p = np.asarray(p_infected, dtype=float)
        need = max(1, min(self.min_run, len(p)))
        run = longest_run(p >= self.slice_threshold, breaks)
        score = self.scan_score(p)
        burden_ok = lung_percent is None or lung_percent >= self.min_lung_percent
        infected = run >= need and score >= self.scan_threshold and burden_ok
        return {
            "verdict": "infected" if infected else "healthy",
            "scan_score": round(score, 5),
            "longest_positive_run": int(run),
            "rule": self.describe(need),
            "rule_params": self.to_dict(),
        }

    def describe(self, need: int | None = None) -> str:
        parts = [
            f"at least {self.min_run if need is None else need} consecutive slice(s) with "
            f"P(infected) >= {self.slice_threshold:.4g}"
        ]
        if self.scan_threshold > 0:
            parts.append(
                f"mean of the top {self.top_k} slice P(infected) >= {self.scan_threshold:.4g}"
            )
        if self.min_lung_percent > 0:
            parts.append(f"infected share of the lung >= {self.min_lung_percent}%")
        return "infected when " + " and ".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ScanRule:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown scan rule option(s) {unknown}; valid: {sorted(valid)}")
        return cls(**d)
