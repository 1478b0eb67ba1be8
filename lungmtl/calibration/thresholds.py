"""Operating points: the slice threshold that reaches a target specificity or sensitivity, and
the scan rule's run criterion as one number per scan."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import InputError


def _needed(target: float) -> int:
    """Fewest slices whose empirical quantile can place a threshold at ``target``."""
    return math.ceil(round(1.0 / (1.0 - target), 9))


def threshold_for_specificity(p_healthy, target: float, where: str = "calibration data") -> float:
    """The lowest threshold that calls at least ``target`` of the healthy slices healthy
    (P < threshold), half-way to the next healthy slice's P."""
    q = np.sort(np.asarray(p_healthy, dtype=float))
    if len(q) < _needed(target):
        raise InputError(
            where,
            f"{len(q)} healthy slice(s) cannot place a threshold at specificity {target:g}: "
            f"need at least {_needed(target)}",
        )
    k = math.ceil(round(target * len(q), 9))  # slices that must fall below
    above = q[q > q[k - 1]]  # ties with the k-th slice must fall below too
    if not len(above) and q[k - 1] >= 1.0:
        raise InputError(
            where,
            f"{int((q >= 1.0).sum())} of {len(q)} healthy slices have P = 1: no threshold "
            f"reaches specificity {target:g}",
        )
    hi = above[0] if len(above) else min(1.0, q[-1] + 1e-3)
    return float((q[k - 1] + hi) / 2)


def threshold_for_sensitivity(p_infected, target: float, where: str = "calibration data") -> float:
    """The highest threshold that still calls at least ``target`` of the infected slices
    infected (P >= threshold), half-way to the next lower infected slice's P."""
    r = np.sort(np.asarray(p_infected, dtype=float))[::-1]
    if len(r) < _needed(target):
        raise InputError(
            where,
            f"{len(r)} infected slice(s) cannot place a threshold at sensitivity {target:g}: "
            f"need at least {_needed(target)}",
        )
    m = math.ceil(round(target * len(r), 9))
    below = r[r < r[m - 1]]
    if r[m - 1] <= 0.0:
        raise InputError(
            where,
            f"{int((r <= 0.0).sum())} of {len(r)} infected slices have P = 0: no threshold "
            f"reaches sensitivity {target:g}",
        )
    lo = below[0] if len(below) else max(0.0, r[m - 1] - 1e-3)
    return float((r[m - 1] + lo) / 2)


def run_statistic(p_in_order, min_run: int) -> float:
    """The highest threshold at which ``min_run`` consecutive slices are positive (the scan
    rule's run criterion as one number per scan)."""
    p = np.asarray(p_in_order, dtype=float)
    m = max(1, min(min_run, len(p)))
    return float(sliding_window_view(p, m).min(axis=1).max()) if len(p) else 0.0


@dataclasses.dataclass(frozen=True)
class Target:
    """The operating point asked for: a specificity or a sensitivity of slices (or neither:
    calibrated P >= 0.5)."""

    specificity: float | None = None
    sensitivity: float | None = None

    def __post_init__(self) -> None:
        if self.specificity is not None and self.sensitivity is not None:
            raise InputError("--target-*", "give a target specificity or sensitivity, not both")
        for name in ("specificity", "sensitivity"):
            v = getattr(self, name)
            if v is not None and not 0.5 <= v < 1.0:
                raise InputError(f"--target-{name}", f"must lie in [0.5, 1), got {v!r}")

    def threshold(self, p_cal, y, where: str) -> float:
        p_cal, y = np.asarray(p_cal), np.asarray(y)
        if self.specificity is not None:
            return threshold_for_specificity(p_cal[y == 0], self.specificity, where)
        if self.sensitivity is not None:
            return threshold_for_sensitivity(p_cal[y == 1], self.sensitivity, where)
        return 0.5

    def describe(self) -> str:
        if self.specificity is not None:
            return f"slice specificity {self.specificity:g}"
        if self.sensitivity is not None:
            return f"slice sensitivity {self.sensitivity:g}"
        return "calibrated P >= 0.5"
