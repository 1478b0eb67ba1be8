"""Significance tests between evaluated models (the paper's paired t-tests, plus McNemar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .data.split import slice_keys
from .errors import InputError


def _load(eval_dir: Path) -> pd.DataFrame:
    path = Path(eval_dir) / "predictions.csv"
    if not path.exists():
        raise InputError(eval_dir, "no predictions.csv here: run `lungmtl evaluate` first")
    return pd.read_csv(path, keep_default_na=True)


def _slice_ids(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
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

    The two prediction tables are aligned on the slice (see :func:`_slice_ids`); slices present
    in one only are an error, since a paired test needs the same test set.
    """
    ka, kb = _slice_ids(a, b)
    m = a.assign(_slice=ka.to_numpy()).merge(
        b.assign(_slice=kb.to_numpy()),
        on="_slice",
        suffixes=("_a", "_b"),
        how="outer",
        indicator=True,
    )
    if (m["_merge"] != "both").any():
        raise InputError("compare", "the evaluations do not cover the same slices")
    out: dict = {"n_slices": len(m)}
    d = m.dropna(subset=["dice_a", "dice_b"])
    if len(d) >= 2 and not np.allclose(d["dice_a"], d["dice_b"]):
        t = stats.ttest_rel(d["dice_a"], d["dice_b"])
        out["dice"] = {
            "mean_a": d["dice_a"].mean(),
            "mean_b": d["dice_b"].mean(),
            "t": float(t.statistic),
            "p": float(t.pvalue),
            "n": len(d),
        }
    else:
        out["dice"] = {
            "mean_a": d["dice_a"].mean() if len(d) else None,
            "mean_b": d["dice_b"].mean() if len(d) else None,
            "t": None,
            "p": 1.0 if len(d) >= 2 else None,
            "n": len(d),
        }
    out["dice_patients"] = _patient_dice_test(d)
    ca, cb = m["correct_a"].astype(float), m["correct_b"].astype(float)
    if not np.array_equal(ca, cb):
        t = stats.ttest_rel(ca, cb)
        out["correct"] = {
            "acc_a": ca.mean(),
            "acc_b": cb.mean(),
            "t": float(t.statistic),
            "p": float(t.pvalue),
        }
    else:
        out["correct"] = {"acc_a": ca.mean(), "acc_b": cb.mean(), "t": None, "p": 1.0}
    only_a = int(((ca == 1) & (cb == 0)).sum())
    only_b = int(((ca == 0) & (cb == 1)).sum())
    p_mc = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    out["mcnemar"] = {"a_right_b_wrong": only_a, "a_wrong_b_right": only_b, "p": float(p_mc)}
    return out


def _patient_dice_test(d: pd.DataFrame) -> dict:
    """Paired t-test on per-patient mean Dice: slices of one patient are correlated, so the
    slice-level test (the paper's) overstates the evidence; this one counts patients."""
    if not {"source_a", "patient_a"} <= set(d.columns):  # predictions from before patients
        return {"t": None, "p": None, "n": 0}
    g = d.groupby(["source_a", "patient_a"])[["dice_a", "dice_b"]].mean()
    if len(g) < 2 or np.allclose(g["dice_a"], g["dice_b"]):
        return {"t": None, "p": 1.0 if len(g) >= 2 else None, "n": len(g)}
    t = stats.ttest_rel(g["dice_a"], g["dice_b"])
    return {"t": float(t.statistic), "p": float(t.pvalue), "n": len(g)}


def compare(eval_dirs: list[str | Path], alpha: float = 0.05) -> str:
    """Markdown table (paper Tables 8/9 style): every evaluation against the first one."""
    if len(eval_dirs) < 2:
        raise InputError("compare", "give at least two evaluation folders")
    base_dir, *others = [Path(p) for p in eval_dirs]
    base = _load(base_dir)
    lines = [
        f"Baseline: `{base_dir}`; paired two-sided tests, alpha = {alpha}. The slice-level "
        "tests are the paper's; they treat a patient's slices as independent. The patient "
        "test pairs per-patient mean Dice (n patients), the more conservative reading.",
        "",
        "| model | n | Dice | Dice base | t (Dice) | p (Dice) | p (Dice, patients) | Acc "
        "| Acc base | t (correct) | p (correct) | McNemar b/c | p (McNemar) | significant |",
        "|---" * 14 + "|",
    ]
    for d in others:
        r = paired_tests(_load(d), base)
        ps = [x for x in (r["dice"]["p"], r["correct"]["p"]) if x is not None]

        def f(v, digits=4):
            return (
                "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"
            )

        lines.append(
            f"| `{d}` | {r['n_slices']} | {f(r['dice']['mean_a'])} | {f(r['dice']['mean_b'])} "
            f"| {f(r['dice']['t'], 3)} | {f(r['dice']['p'])} "
            f"| {f(r['dice_patients']['p'])} (n={r['dice_patients']['n']}) "
            f"| {f(r['correct']['acc_a'])} "
            f"| {f(r['correct']['acc_b'])} | {f(r['correct']['t'], 3)} | {f(r['correct']['p'])} "
            f"| {r['mcnemar']['a_right_b_wrong']}/{r['mcnemar']['a_wrong_b_right']} "
            f"| {f(r['mcnemar']['p'])} | {'yes' if any(p < alpha for p in ps) else 'no'} |"
        )
    return "\n".join(lines)
