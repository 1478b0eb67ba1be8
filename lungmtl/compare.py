"""``lungmtl compare``: a Markdown table of paired tests of evaluations against the first one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import InputError
from .presentation import fmt
from .stats import paired_tests


def _load(eval_dir: Path) -> pd.DataFrame:
    path = Path(eval_dir) / "predictions.csv"
    if not path.exists():
        raise InputError(eval_dir, "no predictions.csv here: run `lungmtl evaluate` first")
    return pd.read_csv(path, keep_default_na=True)


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
        dice, correct, mc = r["dice"], r["correct"], r["mcnemar"]
        ps = [x for x in (dice["p"], correct["p"]) if x is not None]
        lines.append(
            f"| `{d}` | {r['n_slices']} "
            f"| {fmt(dice['mean_a'], 1, 4)} | {fmt(dice['mean_b'], 1, 4)} "
            f"| {fmt(dice['t'], 1, 3)} | {fmt(dice['p'], 1, 4)} "
            f"| {fmt(r['dice_patients']['p'], 1, 4)} (n={r['dice_patients']['n']}) "
            f"| {fmt(correct['acc_a'], 1, 4)} | {fmt(correct['acc_b'], 1, 4)} "
            f"| {fmt(correct['t'], 1, 3)} | {fmt(correct['p'], 1, 4)} "
            f"| {mc['a_right_b_wrong']}/{mc['a_wrong_b_right']} | {fmt(mc['p'], 1, 4)} "
            f"| {'yes' if any(p < alpha for p in ps) else 'no'} |"
        )
    return "\n".join(lines)
