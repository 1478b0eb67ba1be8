"""The metric blocks of metrics.json: per slice, per lesion size, per patient; JSON-safe values."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import ndimage

from ..calibration import Calibration, calibration_block
from ..calibration.fit import MIN_SCAN_SLICES, scans, truth_rows
from ..metrics import CLS_KEYS, SEG_KEYS, THRESHOLD, SegmentationAccumulator, classification_metrics
from ..scan_rule import ScanRule
from ..stats import bootstrap_ci

#: Bin edges of the infected share of a slice for the Dice-by-lesion-size table.
LESION_BINS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0)


def json_safe(v):
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def restrict_to_lung(seg_prob: np.ndarray, lungs: np.ndarray, margin: int = 2) -> np.ndarray:
    """Zero (N,S,S) probabilities outside the lung masks dilated by ``margin`` pixels."""
    grown = ndimage.binary_dilation(
        np.asarray(lungs, dtype=bool), structure=np.ones((1, 3, 3), bool), iterations=margin
    )
    return np.where(grown, seg_prob, 0.0).astype(seg_prob.dtype)


def slice_truth(frame: pd.DataFrame) -> np.ndarray:
    """Slices whose label is true of the slice itself: slice-level labels, and every slice of a
    healthy study. A slice of an infected *study* (MosMed labels whole scans) may show no
    lesion: its label is noisy at slice level."""
    return ((frame["label_level"] != "study") | (frame["label"] == "healthy")).to_numpy()


def classification_block(frame: pd.DataFrame, threshold: float = THRESHOLD) -> dict:
    """Slice counts and the classification keys of metrics.json for the slices in ``frame``."""
    y = frame["y"].to_numpy()
    c = classification_metrics(y, frame["p_infected"].to_numpy(), threshold=threshold)
    return {
        "n_slices": len(frame),
        "n_infected": int(y.sum()),
        "n_healthy": int((1 - y).sum()),
        **{k: c.get(k) for k in CLS_KEYS},
    }


def metric_block(
    frame: pd.DataFrame, seg_prob: np.ndarray, masks: np.ndarray, threshold: float = THRESHOLD
) -> dict:
    """The metrics.json keys for the slices in ``frame`` (positional rows into the arrays).

    Classification counts every slice with its label, as training does; ``n_study_infected``
    says how many of them carry an infected study's label (see :func:`slice_truth`)."""
    block = classification_block(frame, threshold)
    block["n_study_infected"] = int((~slice_truth(frame)).sum())
    pos = frame.loc[frame["has_mask"], "pos"].to_numpy()
    s: dict = {}
    if len(pos):
        acc = SegmentationAccumulator()
        acc.update(seg_prob[pos], masks[pos])
        s = acc.compute()
    block.update({k: s.get(k) for k in SEG_KEYS})
    block["n_slices_with_mask"] = len(pos)
    return block


def lesion_size_block(frame: pd.DataFrame) -> list[dict]:
    """Dice over infected slices binned by the share of the slice the true lesion covers.

    Per-slice Dice is harsh on small lesions (a few pixels off is half the lesion), so a mean
    Dice hides where it is lost; this table shows it. Needs ``lesion_share`` and ``dice``.
    """
    part = frame[frame["has_mask"] & (frame["lesion_share"] > 0)]
    out = []
    for lo, hi in itertools.pairwise(LESION_BINS):
        d = part.loc[(part["lesion_share"] > lo) & (part["lesion_share"] <= hi), "dice"]
        out.append(
            {
                "lesion_share": f"{100 * lo:g}-{100 * hi:g}%",
                "n": len(d),
                "dice_mean": float(d.mean()) if len(d) else None,
                "dice_median": float(d.median()) if len(d) else None,
            }
        )
    return out


def patient_block(frame: pd.DataFrame, threshold: float = THRESHOLD) -> dict:
    """A patient is infected when any of its slices is (truth) / is predicted (model)."""
    g = frame.groupby(["source", "patient"])
    y = g["y"].max().to_numpy()
    p = g["p_infected"].max().to_numpy()
    c = classification_metrics(y, p, threshold=threshold)
    return {
        "n_patients": len(y),
        "n_infected": int(y.sum()),
        "n_healthy": int((1 - y).sum()),
        **{k: c.get(k) for k in CLS_KEYS},
    }


def ci95_block(frame: pd.DataFrame, n_boot: int) -> dict:
    """95% bootstrap intervals of accuracy, Dice (slices with a mask) and Dice over infected
    slices; patients (``group``) are resampled, not slices: a patient's slices are correlated.
    Needs ``group``, ``has_mask``, ``y``, ``lesion_share``, ``correct`` and ``dice``."""
    hm = frame["has_mask"].astype(bool).to_numpy()
    inf = hm & (frame["y"] == 1).to_numpy() & (frame["lesion_share"] > 0).to_numpy()

    def ci(rows: np.ndarray, column: str):
        if not rows.any():
            return None
        values = frame.loc[rows, column].to_numpy(float)
        return bootstrap_ci(values, n_boot=n_boot, groups=frame.loc[rows, "group"].to_numpy())

    return {
        "accuracy": ci(np.ones(len(frame), bool), "correct"),
        "dice_mean": ci(hm, "dice"),
        "dice_infected_mean": ci(inf, "dice"),
        "resampled": "patients",
    }


def calibration_metrics(frame: pd.DataFrame, cal: Calibration, rule: ScanRule) -> dict:
    """How well P(infected) means what it says: per slice (labels true of the slice, see
    :func:`lungmtl.calibration.fit.truth_rows`), overall, per source and for the model's own P;
    per whole scan (patients with enough slices), the scan probability (or, where none was
    fitted, the scan score) against "any slice infected"."""
    truth = truth_rows(frame)
    part = frame[truth]
    y = part["y"].to_numpy()
    sc = scans(frame, "p_infected")
    sc = sc[sc["n"] >= MIN_SCAN_SLICES]  # whole scans: a single slice is no scan
    score = np.array([rule.scan_score(p) for p in sc["p"]])
    scan_p = score if not cal.scan_fitted else np.array([cal.scan_probability(v) for v in score])
    return {
        "in_use": cal.summary(),
        "text": cal.describe(),
        "slices": "labels true of the slice (slice labels, healthy scans, a study's only slice)",
        "slice": calibration_block(part["p_infected"], y),
        "slice_model": calibration_block(part["p_model"], y),
        "per_source": {
            src: calibration_block(g["p_infected"], g["y"])
            for src, g in part.groupby("source", sort=True)
        },
        "scan": calibration_block(scan_p, sc["y"]),
        "scan_measure": "scan probability" if cal.scan_fitted else "scan score (not calibrated)",
    }
