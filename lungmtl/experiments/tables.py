"""Tabulating an experiment: runs.csv, per_source.csv, paired_tests.csv, results.csv, results.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..errors import InputError
from ..metrics import CLS_KEYS, SEG_KEYS
from ..presentation import METRICS as REGISTRY
from ..presentation import Metric, columns, fmt, fmt_p, fmt_pm
from ..stats import paired_tests, pooled_paired_tests
from .plan import MAIN_EVAL, PlannedRun
from .spec import Experiment

#: The paper's Table 3 (segmentation) and Table 4 (classification), and the per-source table.
SEG_TABLE = columns("pixel_accuracy", "mse", "psnr", "ssim", "dice_mean", "dice_infected_mean")
CLS_TABLE = columns("accuracy", "sensitivity", "specificity", "auc", "f1", "mcc")
SOURCE_TABLE = columns("accuracy", "auc", "dice_mean", "dice_infected_mean")
#: Whole scans (metrics.json ``per_volume``): what leave-one-source-out selection reads.
SCAN_TABLE = columns(
    "n_scans", "scan_dice", "scan_nsd", "lung_pct_mae", "lung_pct_bias", "relative_volume_mae"
)
#: ``per_volume`` key -> column of the per-scan table.
SCAN_KEYS = {
    "n_volumes": "n_scans",
    "dice_mean": "scan_dice",
    "nsd_mean": "scan_nsd",
    "lung_pct_mae": "lung_pct_mae",
    "lung_pct_bias": "lung_pct_bias",
    "relative_volume_mae": "relative_volume_mae",
}
#: The CSV columns: classification, segmentation in the registry's (Table 3) order, per scan.
METRICS = CLS_KEYS + tuple(k for k in REGISTRY if k in SEG_KEYS) + tuple(SCAN_KEYS.values())


def _single_task(cfg: RunConfig) -> tuple[bool, bool]:
    """(classification meaningful, segmentation meaningful) for a run's loss weights."""
    return cfg.loss.cls_weight > 0, cfg.loss.seg_weight > 0


def _keep(block: dict, cls_ok: bool, seg_ok: bool) -> dict:
    scan = {SCAN_KEYS[k]: v for k, v in (block.get("per_volume") or {}).items() if k in SCAN_KEYS}
    return {
        k: block.get(k) if (k in CLS_KEYS and cls_ok) or (k in SEG_KEYS and seg_ok) else None
        for k in METRICS
        if k not in scan
    } | {k: v if seg_ok else None for k, v in scan.items()}


def collect(runs: list[PlannedRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per finished run evaluation (``runs.csv``) and per run x source (per-source).

    Metrics of an untrained head (a single-task run) are blanked: they are noise, not results.
    """
    rows, per_source = [], []
    for r in runs:
        cls_ok, seg_ok = _single_task(r.cfg)
        for ev in r.evals:
            f = r.run_dir / ev / "metrics.json"
            if not f.exists():
                continue
            m = json.loads(f.read_text())
            key = {
                "variant": r.variant,
                "held_out": r.held_out or "",
                "evaluation": ev,
                "seed": r.seed,
                "run": r.name,
            }

            rows.append({**key, "n_slices": m.get("n_slices"), **_keep(m, cls_ok, seg_ok)})
            for src, block in (m.get("per_source") or {}).items():
                per_source.append(
                    {
                        **key,
                        "source": src,
                        "n_slices": block.get("n_slices"),
                        **_keep(block, cls_ok, seg_ok),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(per_source)


def _mean_std(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and sample std (ddof 1) over seeds of every metric, per group."""
    out = []
    for keys, part in frame.groupby(by, sort=False):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
        row["n_seeds"] = len(part)
        row["seeds"] = " ".join(str(s) for s in sorted(part["seed"]))
        row["n_slices"] = part["n_slices"].iloc[0]
        for k in METRICS:
            v = pd.to_numeric(part[k], errors="coerce").dropna()
            row[f"{k}_mean"] = v.mean() if len(v) else np.nan
            row[f"{k}_std"] = v.std(ddof=1) if len(v) > 1 else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _predictions(r: PlannedRun, ev: str) -> pd.DataFrame:
    p = pd.read_csv(r.run_dir / ev / "predictions.csv")
    cls_ok, seg_ok = _single_task(r.cfg)
    if not seg_ok:
        p["dice"] = np.nan
    if not cls_ok:
        p["correct"] = False
    return p


def _test(test, *args) -> dict:
    """A paired test's result, or ``{"error": ...}`` where the runs cannot be paired."""
    try:
        return test(*args)
    except InputError as e:
        return {"error": e.problem}


def paired_against_baseline(exp: Experiment, runs: list[PlannedRun]) -> pd.DataFrame:
    """Paired tests of every variant against the baseline: per seed pair and pooled over seeds.

    Runs are matched by seed (and held-out source and evaluation); pooling concatenates the
    per-slice arrays of all matched seeds (slice keys are made unique per seed) and tests once.
    """
    if exp.baseline is None:
        return pd.DataFrame()
    done = {(r.variant, r.held_out, r.seed): r for r in runs}
    rows = []
    for r0 in runs:
        if r0.variant == exp.baseline or r0.seed != exp.seeds[0]:
            continue  # one entry per (variant, held-out source); seeds are looped below
        base_cls, base_seg = _single_task(done[(exp.baseline, r0.held_out, r0.seed)].cfg)
        cls_ok, seg_ok = _single_task(r0.cfg)
        mine: list[dict] = []
        for ev in r0.evals:
            pairs = {}
            for seed in exp.seeds:
                ra, rb = (
                    done[(r0.variant, r0.held_out, seed)],
                    done[(exp.baseline, r0.held_out, seed)],
                )
                if not all((x.run_dir / ev / "predictions.csv").exists() for x in (ra, rb)):
                    continue
                a, b = _predictions(ra, ev), _predictions(rb, ev)
                mine.append(_test_row(r0, ev, str(seed), _test(paired_tests, a, b)))
                pairs[str(seed)] = (a, b)
            if len(pairs) > 1:
                mine.append(_test_row(r0, ev, "pooled", _test(pooled_paired_tests, pairs)))
        for row in mine:  # a test involving an untrained head says nothing
            if not (cls_ok and base_cls):
                row.update(correct_t=None, correct_p=None, mcnemar_p=None, acc=None, acc_base=None)
            if not (seg_ok and base_seg):
                row.update(
                    dice_t=None,
                    dice_p=None,
                    dice_patients_p=None,
                    dice=None,
                    dice_base=None,
                    n_dice=None,
                )
        rows += mine
    return pd.DataFrame(rows)


def headline_tests(tests: pd.DataFrame) -> pd.DataFrame:
    """One test per (variant, held-out source, evaluation): pooled over seeds where more than
    one seed was paired, else the single seed's test."""
    keys = ["variant", "held_out", "evaluation"]
    pooled = tests[tests["seeds"] == "pooled"]
    have = set(map(tuple, pooled[keys].to_numpy()))
    single = tests[tests["seeds"] != "pooled"]
    single = single[[tuple(k) not in have for k in single[keys].to_numpy()]]
    return pd.concat([pooled, single]).sort_index()


def _test_row(r: PlannedRun, ev: str, seeds: str, t: dict) -> dict:
    row = {
        "variant": r.variant,
        "held_out": r.held_out or "",
        "evaluation": ev,
        "seeds": seeds,
        "error": t.get("error", ""),
    }
    if "error" in t:
        return row
    d, c, mc = t["dice"], t["correct"], t["mcnemar"]
    row.update(
        n_slices=t["n_slices"],
        n_dice=d["n"],
        dice=d["mean_a"],
        dice_base=d["mean_b"],
        dice_t=d["t"],
        dice_p=d["p"],
        dice_patients_p=t["dice_patients"]["p"],
        n_patients_dice=t["dice_patients"]["n"],
        acc=c["acc_a"],
        acc_base=c["acc_b"],
        correct_t=c["t"],
        correct_p=c["p"],
        mcnemar_b=mc["a_right_b_wrong"],
        mcnemar_c=mc["a_wrong_b_right"],
        mcnemar_p=mc["p"],
    )
    return row


def summarise(
    exp: Experiment, runs: list[PlannedRun], out: str | Path, alpha: float = 0.05
) -> pd.DataFrame:
    """Write runs.csv, per_source.csv, paired_tests.csv, results.csv and results.md.

    Returns:
        The results table: one row per variant (x held-out source x evaluation) with the mean and
        std over seeds of every metric and the pooled paired tests against the baseline.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_run, per_source = collect(runs)
    per_run.to_csv(out / "runs.csv", index=False)
    if per_run.empty:
        (out / "results.md").write_text(f"# Experiment {exp.name}\n\nNo finished runs yet.\n")
        pd.DataFrame().to_csv(out / "results.csv", index=False)
        return pd.DataFrame()
    by = ["variant", "held_out", "evaluation"]
    results = _mean_std(per_run, by)
    src = _mean_std(per_source, [*by, "source"]) if not per_source.empty else pd.DataFrame()
    src.to_csv(out / "per_source.csv", index=False)
    tests = paired_against_baseline(exp, runs)
    tests.to_csv(out / "paired_tests.csv", index=False)
    test_cols = [
        "dice_t",
        "dice_p",
        "dice_patients_p",
        "correct_t",
        "correct_p",
        "mcnemar_p",
        "n_slices",
    ]
    if not tests.empty:
        pooled = headline_tests(tests).reindex(columns=[*by, *test_cols])
        pooled = pooled.rename(columns={c: f"vs_baseline_{c}" for c in test_cols})
        results = results.merge(pooled, on=by, how="left")
    else:
        for c in test_cols:
            results[f"vs_baseline_{c}"] = np.nan
    results.insert(0, "experiment", exp.name)
    results["baseline"] = exp.baseline or ""
    results.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(_markdown(exp, results, src, tests, alpha))
    return results


def _label_of(row: pd.Series) -> str:
    name = row["variant"]
    if row.get("held_out"):
        name += f" (held out: {row['held_out']})"
    if row.get("evaluation", MAIN_EVAL) != MAIN_EVAL:
        name += f" [{row['evaluation']}]"
    return name


def _table(frame: pd.DataFrame, cols: list[Metric], first: list[str]) -> str:
    """One row per group: the label columns ``first``, then mean ± std of each metric."""
    head = "| " + " | ".join(first + [c.heading for c in cols]) + " |"
    lines = [head, "|---" * (len(first) + len(cols)) + "|"]
    for _, row in frame.iterrows():
        cells = [_label_of(row), str(row["n_seeds"]), str(row["n_slices"])]
        if "source" in frame.columns:
            cells.insert(1, str(row["source"]))
        lines.append(
            "| "
            + " | ".join(
                cells
                + [
                    fmt_pm(row.get(f"{c.key}_mean"), row.get(f"{c.key}_std"), c.scale, c.digits)
                    for c in cols
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _markdown(
    exp: Experiment, results: pd.DataFrame, src: pd.DataFrame, tests: pd.DataFrame, alpha: float
) -> str:
    first = ["model", "seeds", "test slices"]
    parts = [
        f"# Experiment {exp.name}",
        "",
        f"Base config `{exp.base}`"
        + (f" with `{'`, `'.join(exp.base_set)}`" if exp.base_set else "")
        + f"; seeds {exp.seeds} (train.seed"
        + (
            ", and data.split_seed"
            if exp.split_seeds
            else "; the patient split is the same for all"
        )
        + "). Values are mean ± sample std over seeds; n/a = undefined, or a head that was not"
        " trained (single-task runs). Evaluations on the runs' "
        + f"`{exp.eval_split}` split"
        + (
            " (leave-one-source-out: on the held-out source)."
            if (results["held_out"] != "").any()
            else "."
        )
        + " See runs.csv for every run.",
        "",
        "## Segmentation (Table 3 layout)",
        "",
        _table(results, SEG_TABLE, first),
        "",
        "## Classification (Table 4 layout)",
        "",
        _table(results, CLS_TABLE, first),
        "",
    ]
    if results.get("scan_dice_mean", pd.Series(dtype=float)).notna().any():
        parts += [
            "## Per scan (patients with >= 3 masked slices, stacked)",
            "",
            _table(results, SCAN_TABLE, first),
            "",
        ]
    if not src.empty:
        parts += [
            "## Per source",
            "",
            _table(src, SOURCE_TABLE, ["model", "source", "seeds", "test slices"]),
            "",
        ]
    if not tests.empty:
        shown = headline_tests(tests)
        how = (
            "pooled over seeds: the per-slice arrays of runs with the same seed are concatenated"
            " and tested once (per-seed tests: paired_tests.csv; a variant with one finished"
            " seed shows that seed's test)"
            if (shown["seeds"] == "pooled").any()
            else "one seed"
        )
        parts += [
            f"## Paired tests against `{exp.baseline}` (Tables 8 and 9 layout)",
            "",
            f"Two-sided paired t-tests, alpha = {alpha}, {how}. Table 8: per-slice Dice (slices"
            " with a mask); Table 9: per-slice correctness of the infected/healthy call, with"
            " exact McNemar (b = only this model right, c = only the baseline right)."
            " Slice-level tests treat a patient's slices as independent; p (patients) pairs"
            " per-patient mean Dice instead, the more conservative reading.",
            "",
            "| model | seeds | n | Dice | Dice base | t | p | p (patients) | significant |",
            "|---" * 9 + "|",
        ]
        for _, t in shown.iterrows():
            if t.get("error"):
                parts.append(f"| {_label_of(t)} | {t['seeds']} | {t['error']} |||||||")
                continue
            sig = t["dice_p"] is not None and np.isfinite(t["dice_p"]) and t["dice_p"] < alpha
            parts.append(
                f"| {_label_of(t)} | {t['seeds']} | {fmt(t['n_dice'], 1, 0)} "
                f"| {fmt(t['dice'], 100)} | {fmt(t['dice_base'], 100)} "
                f"| {fmt(t['dice_t'], 1, 3)} | {fmt_p(t['dice_p'])} "
                f"| {fmt_p(t.get('dice_patients_p'))} (n={fmt(t.get('n_patients_dice'), 1, 0)}) "
                f"| {'yes' if sig else 'no'} |"
            )
        parts += [
            "",
            "| model | seeds | n | Acc | Acc base | t | p | McNemar b/c | p (McNemar) "
            "| significant |",
            "|---" * 10 + "|",
        ]
        for _, t in shown.iterrows():
            if t.get("error"):
                continue
            sig = (
                t["correct_p"] is not None
                and np.isfinite(t["correct_p"])
                and t["correct_p"] < alpha
            )
            mc = (
                "n/a"
                if t["mcnemar_p"] is None or not np.isfinite(t["mcnemar_p"])
                else f"{int(t['mcnemar_b'])}/{int(t['mcnemar_c'])}"
            )
            parts.append(
                f"| {_label_of(t)} | {t['seeds']} | {t['n_slices']} | {fmt(t['acc'], 100)} "
                f"| {fmt(t['acc_base'], 100)} | {fmt(t['correct_t'], 1, 3)} "
                f"| {fmt_p(t['correct_p'])} | {mc} | {fmt_p(t['mcnemar_p'])} "
                f"| {'yes' if sig else 'no'} |"
            )
        parts.append("")
    return "\n".join(parts)
