"""report.md and the overlay sheet of an evaluation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..metrics import THRESHOLD
from ..presentation import (
    CLS_COLUMNS,
    SEG_COLUMNS,
    fmt,
    markdown_table,
    overlay_sheet,
    volume_section,
)


def overlays(frame, tensors, seg_prob, masks, path: Path, k: int = 3) -> None:
    """Best and worst Dice among infected slices with masks (or most/least confident)."""
    cand = frame[frame["has_mask"] & (frame["y"] == 1)].dropna(subset=["dice"])
    if cand.empty:
        cand = frame.assign(dice=frame["p_infected"])
    cand = cand.sort_values("dice")
    picks = pd.concat([cand.tail(k).iloc[::-1], cand.head(k)]).drop_duplicates("pos")
    cases = []
    for _, r in picks.iterrows():
        i = int(r["pos"])
        cases.append(
            {
                "image": tensors.image[i, 0].float().numpy(),
                "true": masks[i] if r["has_mask"] else None,
                "pred": seg_prob[i] >= THRESHOLD,
                "caption": f"{r['source']} {r['patient']} s{r['slice']}  Dice={r['dice']:.2f}  "
                f"P(inf)={r['p_infected']:.2f}",
            }
        )
    overlay_sheet(cases, path, title="best (top) and worst (bottom) segmentations")


def lesion_table(rows: list[dict]) -> str:
    lines = ["| lesion share | n | Dice mean | Dice median |", "|---|---|---|---|"]
    lines += [
        f"| {r['lesion_share']} | {r['n']} | {fmt(r['dice_mean'], digits=3)} | "
        f"{fmt(r['dice_median'], digits=3)} |"
        for r in rows
    ]
    return "\n".join(lines)


def has_burden(pv: dict) -> bool:
    """Whether the ``per_volume`` block holds a volume with a lung % (burden.png is drawn)."""
    return any(r.get("true_lung_pct") is not None for r in (pv or {}).get("volumes", []))


def calibration_section(c: dict) -> str:
    """ECE (equal-width bins), Brier score and counts: calibrated P overall, per source and per
    scan, beside the model's own P."""
    rows = {
        "slices, calibrated P": c["slice"],
        "slices, model's own P": c["slice_model"],
        **{f"source: {s}": b for s, b in c["per_source"].items()},
        f"whole scans ({c.get('scan_measure', 'scan probability')})": c["scan"],
    }
    lines = ["| | n | positive | ECE | Brier |", "|---|---|---|---|---|"]
    lines += [
        f"| {k} | {b['n']} | {b.get('n_positive', 0)} | {fmt(b['ece'], digits=3)} | "
        f"{fmt(b['brier'], digits=3)} |"
        for k, b in rows.items()
    ]
    return (
        f"Calibration in use: {c['text']}. Slices: {c['slices']}; ECE over "
        f"{c['slice']['n_bins']} equal-width bins.\n\n" + "\n".join(lines)
    )


def write_report(m: dict, path: Path) -> None:
    rows = {"all": m, **{f"source: {s}": b for s, b in m["per_source"].items()}}
    ci = m["ci95"]

    def ci_s(key: str) -> str:
        v = ci.get(key)
        return f"[{fmt(v[0], 1, 4)}, {fmt(v[1], 1, 4)}]" if v else "n/a"

    burden = (
        "\n\n![burden: predicted vs true % of lung, Bland-Altman](burden.png)"
        if has_burden(m["per_volume"])
        else ""
    )
    text = f"""# Evaluation report

Checkpoint: `{m["checkpoint"]}`; data: {m["data"]}; threshold {m["threshold"]} on P(infected).

## Segmentation (paper Table 3 layout; slices with a mask; empty-vs-empty counts as Dice 1)

{markdown_table(rows, SEG_COLUMNS)}

## Classification (paper Table 4 layout)

Every slice with its label, as in training; {m["n_study_infected"]} of them carry an infected
study's label, which may not hold for every slice. The last row leaves those out (slice labels
and healthy studies only); where the study-labelled source also holds most healthy slices, that
row flatters a source shortcut, so it is a check, not the headline.

{markdown_table({**rows, "slice labels only": m["slice_truth_only"]}, CLS_COLUMNS)}

## Calibration (does P(infected) mean what it says?)

{calibration_section(m["calibration"])}

![reliability](reliability.png)

## Patient level (infected when any slice is)

{markdown_table({"patients": {**m["patient"], "n": m["patient"]["n_patients"]}}, CLS_COLUMNS)}

## 95% bootstrap confidence intervals (resampling patients)

- accuracy: {ci_s("accuracy")}
- Dice (all slices with a mask): {ci_s("dice_mean")}
- Dice (infected slices): {ci_s("dice_infected_mean")}

Confusion matrix ([[TN, FP], [FN, TP]]): {m["confusion"]}

## Dice over infected slices by lesion size (share of the slice the true lesion covers)

{lesion_table(m["dice_by_lesion_size"])}

## Per volume (per-scan Dice and normalised surface Dice, as segmentation benchmarks report)

{volume_section(m["per_volume"])}{burden}

![confusion](confusion.png) ![roc](roc.png)

![overlays](overlays.png)
"""
    path.write_text(text)
