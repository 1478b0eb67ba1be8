"""Statistics shared by evaluation, compare and experiments: paired tests, McNemar, bootstrap CIs.

One home, so that every report computes the same numbers the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .data.split import slice_keys
from .errors import InputError


def paired_ttest(a, b) -> dict:
    """Two-sided paired t-test of ``a`` against ``b``: ``{"t", "p", "n"}``.

    Identical samples have nothing to test (t None, p 1.0); fewer than two pairs, no p at all.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    if n < 2 or np.allclose(a, b):
        return {"t": None, "p": 1.0 if n >= 2 else None, "n": n}
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(a, b)
    return {"t": float(t.statistic), "p": float(t.pvalue), "n": n}


def mcnemar_exact(right_a, right_b) -> dict:
    """Exact (binomial) McNemar test on paired right/wrong calls of two models."""
    ra, rb = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    only_a, only_b = int((ra & ~rb).sum()), int((~ra & rb).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"a_right_b_wrong": only_a, "a_wrong_b_right": only_b, "p": float(p)}


def slice_ids(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Keys that pair the slices of two prediction tables: those of ``evaluate``'s split record
    (source, patient, file name, index), so evaluations of a data folder that moved since still
    pair; the file name and index for tables from before patients were recorded; the image's
    whole path where the short keys are not unique in a table."""

    patients = {"source", "patient"} <= set(a.columns) & set(b.columns)

    def short(t: pd.DataFrame) -> pd.Series:
        if patients:
            return slice_keys(t)
        return t["image"].astype(str).map(lambda p: Path(p).name) + "|" + t["index"].astype(str)

    ka, kb = short(a), short(b)
    if ka.is_unique and kb.is_unique:
        return ka, kb
    return tuple(t["image"].astype(str) + "|" + t["index"].astype(str) for t in (a, b))


def paired_tests(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Paired t-tests on per-slice Dice and correctness, and exact McNemar on correctness.

    The two prediction tables are aligned on the slice (see :func:`slice_ids`); slices present
    in one only are an error, since a paired test needs the same test set.
    """
    ka, kb = slice_ids(a, b)
    m = a.assign(_slice=ka.to_numpy()).merge(
        b.assign(_slice=kb.to_numpy()),
        on="_slice",
        suffixes=("_a", "_b"),
        how="outer",
        indicator=True,
    )
    if (m["_merge"] != "both").any():
        raise InputError("compare", "the evaluations do not cover the same slices")
    d = m.dropna(subset=["dice_a", "dice_b"])
    ca, cb = m["correct_a"].astype(float), m["correct_b"].astype(float)
    dice, correct = paired_ttest(d["dice_a"], d["dice_b"]), paired_ttest(ca, cb)
    return {
        "n_slices": len(m),
        "dice": {
            "mean_a": d["dice_a"].mean() if len(d) else None,
            "mean_b": d["dice_b"].mean() if len(d) else None,
            **dice,
        },
        "dice_patients": _patient_dice_test(d),
        "correct": {"acc_a": ca.mean(), "acc_b": cb.mean(), "t": correct["t"], "p": correct["p"]},
        "mcnemar": mcnemar_exact(ca == 1, cb == 1),
    }


def _patient_dice_test(d: pd.DataFrame) -> dict:
    """Paired t-test on per-patient mean Dice: slices of one patient are correlated, so the
    slice-level test (the paper's) overstates the evidence; this one counts patients."""
    if not {"source_a", "patient_a"} <= set(d.columns):  # predictions from before patients
        return {"t": None, "p": None, "n": 0}
    g = d.groupby(["source_a", "patient_a"])[["dice_a", "dice_b"]].mean()
    return paired_ttest(g["dice_a"], g["dice_b"])


def pooled_paired_tests(pairs: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> dict:
    """:func:`paired_tests` once over several paired evaluations (e.g. one per seed): the
    per-slice tables are concatenated, each slice keyed by its pair's label as well."""
    a, b = [], []
    for label, (ta, tb) in pairs.items():
        a.append(ta.assign(image=f"{label}|" + ta["image"].astype(str)))
        b.append(tb.assign(image=f"{label}|" + tb["image"].astype(str)))
    return paired_tests(pd.concat(a), pd.concat(b))


def bootstrap_ci(
    values: Any,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Any = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over per-item values.

    Resamples items (slices) with replacement, or, with ``groups``, whole groups (patients):
    the slices of one patient are correlated, so resampling them one by one makes the interval
    too narrow. For accuracy pass per-slice correctness (0/1); NaN values (e.g. Dice with
    ``empty=nan``) are dropped first.

    Args:
        values: (N,) per-item values.
        stat: statistic of a 1-D sample (np.mean, np.median, ...).
        n_boot: number of bootstrap resamples.
        alpha: 1 - confidence level (0.05 for a 95% interval).
        seed: random seed, so intervals are reproducible.
        groups: optional (N,) group of each item (e.g. "source/patient"): each resample draws
            as many groups as there are, with replacement, and takes ``stat`` over all their
            items (a cluster bootstrap).

    Returns:
        (low, high).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    keep = ~np.isnan(v)
    if groups is not None:
        g = np.asarray(groups).reshape(-1)
        if g.shape != v.shape:
            raise InputError("bootstrap_ci", f"{g.size} groups for {v.size} values")
        _, g = np.unique(g[keep], return_inverse=True)
    v = v[keep]
    if v.size == 0:
        raise InputError("bootstrap_ci", "no (non-NaN) values to resample")
    if not 0 < alpha < 1 or n_boot < 1:
        raise InputError("bootstrap_ci", f"need 0 < alpha < 1 and n_boot >= 1 ({alpha}, {n_boot})")
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    if groups is not None:
        n_groups = int(g.max()) + 1
        sums, counts = np.bincount(g, v, n_groups), np.bincount(g, minlength=n_groups)
        members = [v[g == k] for k in range(n_groups)] if stat is not np.mean else None
        for i in range(n_boot):
            drawn = rng.integers(0, n_groups, size=n_groups)
            if members is None:  # the pooled mean, from per-group sums
                draws[i] = sums[drawn].sum() / counts[drawn].sum()
            else:
                draws[i] = stat(np.concatenate([members[k] for k in drawn]))
    else:
        # Chunks bound memory (chunk x N indices) while avoiding a Python loop per draw for mean.
        chunk = max(1, min(n_boot, 2_000_000 // v.size))
        for start in range(0, n_boot, chunk):
            k = min(chunk, n_boot - start)
            samples = v[rng.integers(0, v.size, size=(k, v.size))]
            if stat is np.mean:
                draws[start : start + k] = samples.mean(axis=1)
            else:
                draws[start : start + k] = [stat(row) for row in samples]
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
