"""The calibration a checkpoint carries (fitted on its validation split) or a site file holds
(fitted by ``lungmtl calibrate`` on a hospital's own scans): how the model's P(infected) becomes a
probability that means what it says, and the operating point read on that probability."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import write_text
from ..metrics import THRESHOLD
from ..scan_rule import ScanRule

FORMAT = "lungmtl-calibration"
ORIGINS = ("model", "validation", "site")
#: Probabilities are clipped this far from 0 and 1 before their logit is taken.
EPS = 1e-12


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


@dataclass(frozen=True)
class Calibration:
    """P = sigmoid(slope * logit(P_model) + intercept) (Platt scaling on the model's logit; the
    temperature is 1 / slope), with the operating point read on the calibrated P.

    Attributes:
        slope, intercept: the slice recalibration (1, 0: the model's own P).
        threshold: a slice is positive at calibrated P >= threshold.
        scan_rule: the scan verdict's rule on calibrated slice P (None: the checkpoint's).
        scan_slope, scan_intercept: the scan score (mean of the top-k calibrated slice P)
            recalibrated to a scan probability the same way, fitted on whole scans
            (``scan_fitted``; else there is no scan probability).
        origin: "model" (none), "validation" (the checkpoint's) or "site" (a site file).
        model: the checkpoint the calibration was fitted for (name) and its sha256.
        fitted: what it was fitted on and the operating point's intervals (for reports).
    """

    slope: float = 1.0
    intercept: float = 0.0
    threshold: float = THRESHOLD
    scan_rule: ScanRule | None = None
    scan_slope: float = 1.0
    scan_intercept: float = 0.0
    scan_fitted: bool = False
    origin: str = "model"
    model: dict = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        for name in ("slope", "intercept", "threshold", "scan_slope", "scan_intercept"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.slope <= 0 or self.scan_slope <= 0:
            raise ValueError("slope and scan_slope must be > 0 (a calibration keeps the ranking)")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")

    @property
    def identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    @property
    def temperature(self) -> float:
        return 1.0 / self.slope

    def apply(self, p_model) -> np.ndarray:
        """Calibrated P(infected) of the model's slice probabilities (unchanged by identity)."""
        p = np.asarray(p_model, dtype=float)
        return p.copy() if self.identity else sigmoid(self.slope * logit(p) + self.intercept)

    def invert(self, p) -> np.ndarray:
        """The model's P that calibrates to ``p`` (for moving a threshold between calibrations)."""
        if self.identity:
            return np.asarray(p, dtype=float).copy()
        return sigmoid((logit(p) - self.intercept) / self.slope)

    def moved(self, rule: ScanRule, source: Calibration | None = None) -> ScanRule:
        """``rule``, read on ``source``'s calibrated P (None: the model's P), moved onto this
        calibration so that it gives the same verdicts (the run threshold exactly; the scan
        score's approximately, as a mean of calibrated P is not the calibration of a mean)."""

        def move(t: float) -> float:
            raw = t if source is None else float(source.invert(t))
            return float(self.apply(raw))  # unrounded: the same verdicts, to the last digit

        return dataclasses.replace(
            rule,
            slice_threshold=move(rule.slice_threshold),
            scan_threshold=move(rule.scan_threshold) if rule.scan_threshold > 0 else 0.0,
        )

    def scan_probability(self, scan_score: float) -> float | None:
        """The scan score (on calibrated slice P) as a calibrated scan probability; None where
        no whole scans were there to fit it on."""
        if not self.scan_fitted:
            return None
        return float(sigmoid(self.scan_slope * logit(scan_score) + self.scan_intercept))

    def summary(self) -> dict:
        """What summary.json and metrics.json say about the calibration in use."""
        return {
            "origin": self.origin,
            "file": self.path,
            "temperature": round(self.temperature, 4),
            "slope": round(self.slope, 4),
            "intercept": round(self.intercept, 4),
            "threshold": round(self.threshold, 5),
            "fitted_on": self.fitted.get("data"),
        }

    def describe(self) -> str:
        if self.origin == "model":
            return "none (the model's own P)"
        if self.origin == "validation" and self.identity:
            return "checked on validation: the model's own P kept (rescaling did not help there)"
        where = f"site file {self.path}" if self.origin == "site" else "fitted on validation"
        return (
            f"{where}: P = sigmoid({self.slope:.3g} * logit(P_model) {self.intercept:+.3g}), "
            f"slice threshold {self.threshold:.3g}"
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["scan_rule"] = None if self.scan_rule is None else self.scan_rule.to_dict()
        d.pop("path")
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(
        cls, d: dict, where: str | Path = "calibration", path: str | Path | None = None
    ) -> Calibration:
        d = dict(d)
        if d.pop("format", FORMAT) != FORMAT:
            raise InputError(where, f"not a lungmtl calibration (no format {FORMAT!r})")
        valid = {f.name for f in dataclasses.fields(cls)} - {"path"}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise InputError(where, f"unknown calibration key(s) {unknown}; valid: {sorted(valid)}")
        for key in ("model", "fitted"):
            if not isinstance(d.get(key, {}), dict):
                raise InputError(where, f"invalid calibration: {key!r} must be a mapping")
        if d.get("origin", "model") not in ORIGINS:
            raise InputError(where, f"invalid calibration: origin must be one of {ORIGINS}")
        try:
            if d.get("scan_rule") is not None:
                d["scan_rule"] = ScanRule.from_dict(d["scan_rule"])
            return cls(**d, path=None if path is None else str(path))
        except (TypeError, ValueError) as e:
            raise InputError(where, f"invalid calibration: {e}") from None

    @classmethod
    def of_checkpoint(cls, ck: dict) -> Calibration:
        """The calibration a checkpoint carries (fitted on its validation split), else none."""
        d = ck.get("calibration")
        return cls() if not d else cls.from_dict(d, "checkpoint calibration")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """A site file written by ``lungmtl calibrate``."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(path, "no such calibration file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(path, f"unreadable calibration file: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(path, f"not a lungmtl calibration (no format {FORMAT!r})")
        cal = cls.from_dict(d, path, path)
        if cal.origin != "site" or not cal.model.get("sha256"):
            raise InputError(
                path,
                "not a site calibration written by `lungmtl calibrate` (origin 'site' with the "
                "model's sha256): it cannot be checked against the checkpoint",
            )
        return cal

    def check_model(self, sha256: str, name: str) -> None:
        """Refuse a site file fitted on another model's outputs: its numbers mean nothing here."""
        want = self.model.get("sha256")
        if want != sha256:
            raise InputError(
                self.path or "calibration",
                f"fitted for model {self.model.get('name')!r} (sha256 {want[:12]}...), not for "
                f"{name!r} (sha256 {sha256[:12]}...): calibrate again with this model",
            )

    def save(self, path: str | Path) -> Path:
        return write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
