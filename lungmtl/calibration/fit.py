"""Fitting a :class:`~lungmtl.calibration.model.Calibration` to labelled slices and scans.

The slice recalibration is Platt scaling on the model's logit, fitted by maximum a posteriori
with a Gaussian prior centred on the calibration the model already has (weight ``PRIOR``, a few
slices' worth): on a handful of scans the fit stays near it instead of running off to a perfect
separation. It is a dozen lines of scipy, written here because scikit-learn's logistic
regression can only shrink towards zero slope (all P equal), the wrong prior for a calibration.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from ..errors import InputError
from ..scan_rule import ScanRule
from .model import Calibration, logit, sigmoid
from .thresholds import Target, run_statistic

#: Weight of the prior (in units of one slice's log-likelihood per unit squared distance).
PRIOR = 1.0
#: Fewest patients with healthy slices, and with infected slices, a site calibration accepts.
MIN_HEALTHY_PATIENTS = 2
MIN_INFECTED_PATIENTS = 1
#: Fewest slices of each class whose label is true of the slice.
MIN_SLICES_PER_CLASS = 5
#: Fewest slices of one patient that make a scan for the scan rule.
MIN_SCAN_SLICES = 8
#: Slope bounds: a calibration rescales the logit, it never flips or flattens the ranking.
SLOPE_BOUNDS = (0.05, 20.0)


def fit_platt(
    p_model,
    y,
    prior: tuple[float, float] = (1.0, 0.0),
    strength: float = PRIOR,
    intercept: bool = True,
) -> tuple[float, float]:
    """(slope, intercept) maximising the likelihood of ``y`` under sigmoid(slope*logit(p) +
    intercept), plus a Gaussian prior of weight ``strength`` centred on ``prior``; without
    ``intercept`` it stays at the prior's (temperature scaling when that is 0)."""
    x, y = logit(p_model), np.asarray(y, dtype=float)
    a0, b0 = prior

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = theta
        z = a * x + b
        nll = float(np.sum(np.logaddexp(0.0, z) - y * z))
        r = sigmoid(z) - y
        reg = 0.5 * strength * ((a - a0) ** 2 + (b - b0) ** 2)
        grad = np.array([np.sum(r * x) + strength * (a - a0), np.sum(r) + strength * (b - b0)])
        return nll + reg, grad

    start = np.array([min(max(a0, SLOPE_BOUNDS[0]), SLOPE_BOUNDS[1]), b0])
    b_bounds = (-50, 50) if intercept else (b0, b0)
    res = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[SLOPE_BOUNDS, b_bounds])
    return float(res.x[0]), float(res.x[1])


#: Slice recalibrations: whether each fits the slope and the intercept.
KINDS = {"platt": (True, True), "temperature": (True, False), "none": (False, False)}


def _fit(p_model, y, prior: Calibration, kind: str, strength: float = PRIOR) -> tuple[float, float]:
    if kind == "none":
        return prior.slope, prior.intercept
    return fit_platt(p_model, y, (prior.slope, prior.intercept), strength, KINDS[kind][1])


def log_loss(p, y) -> float:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def choose_kind(
    t_rows: pd.DataFrame, prior: Calibration, strength: float = PRIOR, folds: int = 5, seed: int = 0
) -> tuple[str, dict]:
    """The recalibration with the lowest log-loss on held-out patients (``folds``-fold
    cross-validation over ``group``; ties go to the simpler kind), and every kind's scores.
    A model already calibrated for the site keeps its P instead of a fit to noise."""
    from .measures import calibration_block

    groups = t_rows["group"].unique()
    folds = max(2, min(folds, len(groups)))
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(groups), np.arange(len(groups)) % folds, strict=True))
    fold = t_rows["group"].map(fold_of).to_numpy()
    p, y = t_rows["p_model"].to_numpy(), t_rows["y"].to_numpy()
    scores = {}
    for kind in ("none", "temperature", "platt"):  # simplest first
        held = np.zeros(len(p))
        for k in range(folds):
            a, b = _fit(p[fold != k], y[fold != k], prior, kind, strength)
            held[fold == k] = Calibration(slope=a, intercept=b).apply(p[fold == k])
        block = calibration_block(held, y)
        scores[kind] = {"log_loss": log_loss(held, y), "ece": block["ece"], "brier": block["brier"]}
    best = min(scores, key=lambda k: round(scores[k]["log_loss"], 4))
    return best, scores


def truth_rows(table: pd.DataFrame) -> np.ndarray:
    """Slices whose label is true of the slice: slice-level labels, every slice of a healthy
    scan, and a study label given to a study's only slice (a key slice, as MosMed's mid slice)."""
    per_group = table.groupby("group")["group"].transform("size").to_numpy()
    study = (table["label_level"] == "study").to_numpy()
    return ~study | (table["y"].to_numpy() == 0) | (per_group == 1)


def scans(table: pd.DataFrame, p_col: str) -> pd.DataFrame:
    """One row per patient: scan label (any slice infected), slice count, P in slice order."""
    rows = []
    for g, part in table.groupby("group", sort=True):
        order = pd.to_numeric(part["slice"], errors="coerce")
        part = (
            part.iloc[np.argsort(order.to_numpy(), kind="stable")] if order.notna().all() else part
        )
        rows.append(
            {"group": g, "y": int(part["y"].max()), "n": len(part), "p": part[p_col].to_numpy()}
        )
    return pd.DataFrame(rows)


def check_size(table: pd.DataFrame, truth: np.ndarray, where: str) -> bool:
    """Refuse data too small to say anything, naming what is missing; True when the infected
    slices whose labels are true of the slice suffice to recalibrate P (else only scans and
    healthy slices speak: the threshold for a specificity, the scan rule)."""
    t = table[truth]
    counts = {
        "healthy patients": (t.loc[t["y"] == 0, "group"].nunique(), MIN_HEALTHY_PATIENTS),
        "infected patients": (
            table.loc[table["y"] == 1, "group"].nunique(),
            MIN_INFECTED_PATIENTS,
        ),
        "healthy slices": (int((t["y"] == 0).sum()), MIN_SLICES_PER_CLASS),
    }
    short = [f"{n} {what} (need {least})" for what, (n, least) in counts.items() if n < least]
    if short:
        raise InputError(
            where,
            "too little labelled data to calibrate: "
            + ", ".join(short)
            + " (healthy: slice labels, healthy scans or a key slice per study); label more scans",
        )
    return int((t["y"] == 1).sum()) >= MIN_SLICES_PER_CLASS


def _rates(p_cal, y, t: float) -> tuple[float | None, float | None]:
    p_cal, y = np.asarray(p_cal), np.asarray(y)
    spec = float((p_cal[y == 0] < t).mean()) if (y == 0).any() else None
    sens = float((p_cal[y == 1] >= t).mean()) if (y == 1).any() else None
    return spec, sens


def _scan_rule(
    sc: pd.DataFrame,
    cal: Calibration,
    prior: Calibration,
    base: ScanRule,
    threshold: float,
    fit: bool,
) -> tuple[ScanRule, dict]:
    """The scan rule on the new calibrated P: fitted on the site's whole scans where it has
    healthy ones (the run threshold half-way between the highest run statistic of a healthy
    scan and 1, a margin against the next healthy scan, never below the slice threshold), else
    the checkpoint's rule moved onto the new calibration unchanged in the model's P."""
    moved = cal.moved(base, prior)
    volumes = sc[sc["n"] >= MIN_SCAN_SLICES]
    healthy = volumes[volumes["y"] == 0]
    if not fit:
        return moved, {"scan_rule": "checkpoint's rule, moved onto this calibration"}
    if not len(healthy):
        return moved, {
            "scan_rule": "checkpoint's rule, moved onto this calibration (no healthy scans)"
        }
    stat = lambda r: run_statistic(cal.apply(r), base.min_run)  # noqa: E731
    top = max(stat(p) for p in healthy["p"])
    t = float(max(threshold, top + 0.5 * (1.0 - top)))
    rule = dataclasses.replace(moved, slice_threshold=t, scan_threshold=0.0)
    inf = volumes[volumes["y"] == 1]

    def verdicts(scans: pd.DataFrame) -> list[bool]:
        return [rule.decide(cal.apply(p), None)["verdict"] == "infected" for p in scans["p"]]

    called, false = verdicts(inf), verdicts(healthy)
    return rule, {
        "scan_rule": f"fitted: {len(healthy) - sum(false)} of {len(healthy)} healthy scan(s) "
        "called healthy",
        "n_scans_healthy": len(healthy),
        "n_scans_infected": len(inf),
        "scan_sensitivity": float(np.mean(called)) if called else None,
    }


def fit_site(
    table: pd.DataFrame,
    *,
    prior: Calibration,
    base_rule: ScanRule,
    target: Target | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    where: str = "calibration data",
    fit_scan_rule: bool = True,
    kind: str = "auto",
    prior_strength: float = PRIOR,
) -> Calibration:
    """Fit a site calibration to ``table`` (columns ``group``, ``slice``, ``y``,
    ``label_level``, ``p_model``): slice recalibration, the slice threshold for ``target``, the
    scan rule and the scan probability, with bootstrap intervals over patients.

    With ``fit_scan_rule`` False the checkpoint's rule is only moved onto the new calibration
    (same verdicts as before on the model's P). ``kind`` is the slice recalibration: "platt"
    (slope and intercept), "temperature" (the slope alone), "none" (the prior's, kept) or
    "auto" (the one of them that predicts held-out patients best, :func:`choose_kind`)."""
    if kind not in (*KINDS, "auto"):
        raise InputError(
            "--kind", f"unknown calibration kind {kind!r}; valid: auto, {', '.join(KINDS)}"
        )
    target = target or Target()
    table = table.reset_index(drop=True)
    truth = truth_rows(table)
    slice_infected = check_size(table, truth, where)
    t_rows = table[truth]
    cv, note = None, None
    if not slice_infected:
        if target.sensitivity is not None:
            raise InputError(
                where,
                f"a target sensitivity needs at least {MIN_SLICES_PER_CLASS} slices labelled "
                "infected (slice labels or a key slice per study); scan labels alone say which "
                "slices of an infected scan are healthy",
            )
        kind, note = "none", "no slice-level infected labels: P kept, only scans fitted"
    elif kind == "auto":
        kind, cv = choose_kind(t_rows, prior, prior_strength, seed=seed)
    a, b = _fit(t_rows["p_model"], t_rows["y"], prior, kind, prior_strength)
    cal = Calibration(slope=a, intercept=b)
    p_cal = cal.apply(t_rows["p_model"])
    y = t_rows["y"].to_numpy()
    threshold = target.threshold(p_cal, y, where)
    sc = scans(table.assign(p_cal=cal.apply(table["p_model"])), "p_model")
    rule, scan_info = _scan_rule(sc, cal, prior, base_rule, threshold, fit_scan_rule)
    # The scan probability is fitted on whole scans only (a single slice's "scan score" is not
    # what the top slices of a volume give), and only where both verdicts occur among them.
    vol = sc[sc["n"] >= MIN_SCAN_SLICES]
    scan_fitted = vol["y"].nunique() == 2
    sa, sb = 1.0, 0.0
    if scan_fitted:
        score = np.array([rule.scan_score(cal.apply(p)) for p in vol["p"]])
        sa, sb = fit_platt(score, vol["y"], (1.0, 0.0))
    spec, sens = _rates(p_cal, y, threshold)
    boot = _bootstrap(
        t_rows, prior, cal, target, threshold, n_boot, seed, where, kind, prior_strength
    )
    fitted = {
        "data": where,
        "n_patients": int(table["group"].nunique()),
        "n_slices": len(table),
        "n_slices_used": int(truth.sum()),
        "n_healthy_slices": int((y == 0).sum()),
        "n_infected_slices": int((y == 1).sum()),
        "n_scans": len(sc),
        "n_scans_for_probability": len(vol) if scan_fitted else 0,
        "target": target.describe(),
        "kind": kind,
        "kind_note": note,
        "cross_validation": cv,
        "specificity": spec,
        "sensitivity": sens,
        **scan_info,
        "ci95": boot,
        "note": "specificity and sensitivity are measured on the calibration data itself",
    }
    return Calibration(
        slope=a,
        intercept=b,
        threshold=threshold,
        scan_rule=rule,
        scan_slope=sa,
        scan_fitted=bool(scan_fitted),
        scan_intercept=sb,
        origin="site",
        fitted=fitted,
    )


def _bootstrap(
    t_rows: pd.DataFrame,
    prior: Calibration,
    point: Calibration,
    target: Target,
    threshold: float,
    n_boot: int,
    seed: int,
    where: str,
    kind: str = "platt",
    strength: float = PRIOR,
) -> dict:
    """95% intervals of the fit and of the operating point, patients resampled with replacement
    (the threshold refitted per replicate; specificity and sensitivity of the chosen point;
    replicates lacking a class or too small for the target are skipped and counted)."""
    if n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    groups = t_rows["group"].to_numpy()
    names = np.unique(groups)
    index = {g: np.flatnonzero(groups == g) for g in names}
    p, y = t_rows["p_model"].to_numpy(), t_rows["y"].to_numpy()
    draws: dict[str, list[float]] = {
        k: [] for k in ("slope", "intercept", "threshold", "spec", "sens")
    }
    for _ in range(n_boot):
        rows = np.concatenate([index[g] for g in rng.choice(names, len(names))])
        pb, yb = p[rows], y[rows]
        if yb.min() == yb.max() and kind != "none":
            continue
        a, b = _fit(pb, yb, prior, kind, strength)
        pc = Calibration(slope=a, intercept=b).apply(pb)
        try:
            t = target.threshold(pc, yb, where)
        except InputError:
            continue
        spec, sens = _rates(point.apply(pb), yb, threshold)  # the chosen point, resampled
        for k, v in zip(draws, (a, b, t, spec, sens), strict=True):
            if v is not None:
                draws[k].append(v)
    if target.specificity is None and target.sensitivity is None:
        draws.pop("threshold")  # fixed at 0.5
    out = {
        k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None
        for k, v in draws.items()
    }
    out["n_boot"] = len(draws["slope"])
    out["resampled"] = "patients"
    return out
