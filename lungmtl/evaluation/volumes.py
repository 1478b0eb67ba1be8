"""Per-volume Dice and normalised surface Dice (NSD), as COVID-19-CT-Seg and nnU-Net report scans.

A volume is one patient's masked slices in manifest order; undefined cases and units are in
docs/method.md, "Where a metric is undefined".
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..stats import bootstrap_ci

#: Fewest masked slices of one patient that make a volume.
MIN_SLICES = 3
#: NSD tolerance in pixels of the model's input grid.
DEFAULT_TOLERANCE = 2.0
#: Smallest true infection (percent of lung) whose relative volume error is averaged: below it
#: a few true voxels make the ratio explode (6 true, 1712 predicted: +28433 %).
MIN_BURDEN_PCT = 0.5


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if p.shape != t.shape:
        raise InputError(
            "per-volume metrics", f"prediction {p.shape} does not match truth {t.shape}"
        )
    return p, t


def slice_order(frame: pd.DataFrame) -> np.ndarray:
    """Positions 0..len-1 of ``frame``'s rows, ordered by a numeric ``slice`` column if any."""
    if "slice" in frame:
        z = pd.to_numeric(frame["slice"], errors="coerce")
        if z.notna().all():
            return np.argsort(z.to_numpy(), kind="stable")
    return np.arange(len(frame))


def volume_dice(pred, true) -> float:
    """Dice of two stacked 3D masks (all voxels pooled): 2|P∩T| / (|P| + |T|)."""
    p, t = _pair(pred, true)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int((p & t).sum()) / total


def surface_dice(pred, true, tolerance: float = DEFAULT_TOLERANCE, spacing=None) -> float:
    """Normalised surface Dice of two 2D/3D masks by ``monai.metrics.compute_surface_dice``.

    Args:
        pred, true: boolean masks of one volume, (Z, H, W) or (H, W).
        tolerance: largest boundary distance counted as correct, in units of ``spacing``.
        spacing: voxel spacing (None: 1 in every axis, i.e. pixels and slice steps).
    """
    from monai.metrics import compute_surface_dice

    p, t = _pair(pred, true)
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0

    def onehot(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(a.astype(np.float32))
        return torch.stack([1 - x, x])[None]

    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        nsd = compute_surface_dice(
            onehot(p), onehot(t), class_thresholds=[float(tolerance)], spacing=spacing
        )
    return float(nsd[0, 0])


def volume_error(pred, true, lung=None, voxel_ml: float | None = None) -> dict:
    """The infected volume a clinician reads, predicted against true.

    Returns voxel counts, the infected share of the volume (``true_share``, ``pred_share``),
    ``abs_error`` (|pred - true| voxels), ``relative_error`` ((pred - true) / true; None when
    the truth is empty) and, with a lung mask of the same shape holding any lung, the percent of
    lung infected (infected voxels / lung voxels x 100; ``true_lung_pct``, ``pred_lung_pct``).
    With ``voxel_ml`` (mL of one voxel) also ``true_ml`` and ``pred_ml``.
    """
    p, t = _pair(pred, true)
    n_true, n_pred = int(t.sum()), int(p.sum())
    out = {
        "n_voxels": int(t.size),
        "true_voxels": n_true,
        "pred_voxels": n_pred,
        "true_share": n_true / t.size if t.size else None,
        "pred_share": n_pred / t.size if t.size else None,
        "abs_error": abs(n_pred - n_true),
        "relative_error": (n_pred - n_true) / n_true if n_true else None,
        "lung_voxels": None,
        "true_lung_pct": None,
        "pred_lung_pct": None,
    }
    if lung is not None:
        n_lung = int(_pair(lung, t)[0].sum())
        if n_lung:
            out.update(
                lung_voxels=n_lung,
                true_lung_pct=100.0 * n_true / n_lung,
                pred_lung_pct=100.0 * n_pred / n_lung,
            )
    if voxel_ml is not None:
        out.update(true_ml=n_true * float(voxel_ml), pred_ml=n_pred * float(voxel_ml))
    return out


def score_volume(
    pred, true, lung=None, tolerance: float = DEFAULT_TOLERANCE, voxel_ml: float | None = None
) -> dict:
    """Dice, NSD and :func:`volume_error` of one stacked volume."""
    return {
        "dice": volume_dice(pred, true),
        "nsd": surface_dice(pred, true, tolerance),
        **volume_error(pred, true, lung, voxel_ml),
    }


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def burden_pct(row: dict) -> float:
    """A volume's true infection in percent of lung, or of its voxels where no lung is known."""
    if row["true_lung_pct"] is not None:
        return row["true_lung_pct"]
    return 100.0 * row["true_share"] if row["true_share"] is not None else 0.0


def agreement(true, pred) -> dict:
    """Bias, Bland-Altman 95% limits of agreement (bias ± 1.96 sd, ddof 1; None below 2 pairs),
    Pearson and Spearman r (None below 3 pairs or with a constant side) of pred against true."""
    from scipy.stats import pearsonr, spearmanr

    t, p = np.asarray(true, float), np.asarray(pred, float)
    d = p - t
    out: dict = {"bias": float(d.mean()) if len(d) else None, "loa": None, "r": None, "rho": None}
    if len(d) >= 2:
        sd = float(d.std(ddof=1))
        out["loa"] = [out["bias"] - 1.96 * sd, out["bias"] + 1.96 * sd]
    if len(d) >= 3 and np.ptp(t) > 0 and np.ptp(p) > 0:
        out["r"] = float(pearsonr(t, p)[0])
        out["rho"] = float(spearmanr(t, p)[0])
    return out


def summarize(rows: list[dict], n_boot: int = 1000, min_burden_pct: float = MIN_BURDEN_PCT) -> dict:
    """Means, medians and bootstrap 95% CIs over volumes (each volume one item) of per-volume
    rows from :func:`score_volume`, plus the errors of the infected burden.

    ``*_infected_mean`` leaves out volumes with an empty truth (a healthy scan scores 1 when
    nothing is predicted): benchmark volumes all hold infection, so compare with those.
    Relative volume error averages only volumes with true infection >= ``min_burden_pct`` of
    lung (of voxels where no lung is known): near-healthy scans blow the ratio up."""
    infected = [r for r in rows if r["true_voxels"]]
    out: dict = {"n_volumes": len(rows), "n_empty_truth": len(rows) - len(infected)}
    for key in ("dice", "nsd"):
        v = np.array([r[key] for r in rows], float)
        out[f"{key}_mean"] = float(v.mean()) if len(v) else None
        out[f"{key}_median"] = float(np.median(v)) if len(v) else None
        out[f"{key}_ci"] = list(bootstrap_ci(v, n_boot=n_boot)) if len(v) else None
        out[f"{key}_infected_mean"] = _mean([r[key] for r in infected])
    out["infected_share_mae"] = _mean([abs(r["pred_share"] - r["true_share"]) for r in rows])
    lung = [r for r in rows if r["true_lung_pct"] is not None]
    t = [r["true_lung_pct"] for r in lung]
    p = [r["pred_lung_pct"] for r in lung]
    agree = agreement(t, p)
    out["lung_pct_mae"] = _mean([abs(b - a) for a, b in zip(t, p, strict=True)])
    out["lung_pct_bias"] = agree["bias"]
    out["lung_pct_loa"] = agree["loa"]
    out["lung_pct_r"] = agree["r"]
    out["lung_pct_spearman"] = agree["rho"]
    ml = [r for r in rows if r.get("true_ml") is not None]
    out["ml_mae"] = _mean([abs(r["pred_ml"] - r["true_ml"]) for r in ml])
    rel = [
        r["relative_error"]
        for r in infected
        if r["relative_error"] is not None and burden_pct(r) >= min_burden_pct
    ]
    out["relative_volume_mae"] = _mean([abs(x) for x in rel])
    out["relative_volume_bias"] = _mean(rel)
    out["relative_min_lung_pct"] = float(min_burden_pct)
    out["n_relative"] = len(rel)
    basis = "lung" if len(lung) == len(rows) else "voxels" if not lung else "lung or voxels"
    out["relative_rule"] = {
        "lung": f"volumes whose true infection is >= {min_burden_pct:g}% of the lung",
        "voxels": f"volumes whose true infection is >= {min_burden_pct:g}% of the volume's "
        "voxels (no lung mask known)",
        "lung or voxels": f"volumes whose true infection is >= {min_burden_pct:g}% of the lung "
        "(of the volume's voxels where no lung mask is known)",
    }[basis]
    return out


def per_volume_block(
    frame: pd.DataFrame,
    pred: np.ndarray,
    masks: np.ndarray,
    lungs: np.ndarray | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_slices: int = MIN_SLICES,
    n_boot: int = 1000,
    voxel_ml: float | None = None,
) -> dict:
    """The ``per_volume`` block of metrics.json.

    Args:
        frame: one row per slice with ``source``, ``patient``, ``has_mask``, ``pos`` (row into
            the arrays) and optionally ``slice``.
        pred: (N, S, S) predicted masks (bool).
        masks: (N, S, S) true 0/1 masks.
        lungs: (N, S, S) lung masks, or None.
        tolerance: NSD tolerance in pixels.
        min_slices: fewest masked slices of a patient that make a volume.
        voxel_ml: mL of one voxel of the stacked grid; None (resampled slices of unknown
            spacing) leaves volumes in mL out.
    """
    rows = []
    masked = frame[frame["has_mask"].astype(bool)]
    for (source, patient), part in masked.groupby(["source", "patient"], sort=True):
        if len(part) < min_slices:
            continue
        pos = part["pos"].to_numpy()[slice_order(part)]
        lung = None if lungs is None else np.asarray(lungs[pos])
        s = score_volume(np.asarray(pred[pos]), np.asarray(masks[pos]), lung, tolerance, voxel_ml)
        rows.append({"source": source, "patient": patient, "n_slices": len(pos), **s})
    block = {
        "rule": f"patients with >= {min_slices} masked slices, stacked in slice order",
        "min_slices": min_slices,
        "tolerance_px": float(tolerance),
        "voxel_ml": voxel_ml,
        "ml": "unknown spacing" if voxel_ml is None else f"{voxel_ml:g} mL per voxel",
        **summarize(rows, n_boot),
    }
    block["per_source"] = {
        src: summarize([r for r in rows if r["source"] == src], n_boot)
        for src in sorted({r["source"] for r in rows})
    }
    block["volumes"] = rows
    return block
