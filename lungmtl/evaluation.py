"""evaluate(): metrics.json (overall, per source, per patient, CIs), predictions.csv, report."""

from __future__ import annotations

import itertools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .config import RunConfig, from_dict
from .data.build import build_from_config
from .data.cache import build_cache, skipped_report
from .data.dataset import SliceTensors
from .data.sources import load_sources
from .data.split import slice_keys
from .device import prepare_model, resolve_device
from .errors import InputError
from .files import write_text
from .metrics import (
    CLS_KEYS,
    SEG_KEYS,
    THRESHOLD,
    SegmentationAccumulator,
    bootstrap_ci,
    classification_metrics,
)
from .models import checkpoint
from .models.shipped import default_checkpoint
from .predict_core import gate_masks, predict_tensors
from .presentation import (
    CLS_COLUMNS,
    SEG_COLUMNS,
    confusion_png,
    fmt,
    markdown_table,
    overlay_sheet,
    roc_png,
    volume_section,
)
from .volume_metrics import DEFAULT_TOLERANCE, per_volume_block

#: Bin edges of the infected share of a slice for the Dice-by-lesion-size table.
LESION_BINS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0)


def _clean(v):
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
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


def classification_block(frame: pd.DataFrame) -> dict:
    """Slice counts and the classification keys of metrics.json for the slices in ``frame``."""
    y = frame["y"].to_numpy()
    c = classification_metrics(y, frame["p_infected"].to_numpy(), threshold=THRESHOLD)
    return {
        "n_slices": len(frame),
        "n_infected": int(y.sum()),
        "n_healthy": int((1 - y).sum()),
        **{k: c.get(k) for k in CLS_KEYS},
    }


def metric_block(frame: pd.DataFrame, seg_prob: np.ndarray, masks: np.ndarray) -> dict:
    """The metrics.json keys for the slices in ``frame`` (positional rows into the arrays).

    Classification counts every slice with its label, as training does; ``n_study_infected``
    says how many of them carry an infected study's label (see :func:`slice_truth`)."""
    block = classification_block(frame)
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


def patient_block(frame: pd.DataFrame) -> dict:
    """A patient is infected when any of its slices is (truth) / is predicted (model)."""
    g = frame.groupby(["source", "patient"])
    y = g["y"].max().to_numpy()
    p = g["p_infected"].max().to_numpy()
    c = classification_metrics(y, p, threshold=THRESHOLD)
    return {
        "n_patients": len(y),
        "n_infected": int(y.sum()),
        "n_healthy": int((1 - y).sum()),
        **{k: c.get(k) for k in CLS_KEYS},
    }


def _select(
    checkpoint_path: Path,
    ck: dict,
    data: list[str] | None,
    split: str,
    cfg: RunConfig,
    cache_dir: str | None,
    progress: bool,
):
    """The cache and rows to evaluate: new data, or a split of the run's own data."""
    if data:
        table = load_sources(data)
        cache = build_cache(
            table, cfg.preprocess, cache_dir or cfg.data.cache_dir, skip_bad=True, progress=progress
        )
        return cache, np.arange(len(cache))
    if cache_dir:
        cfg.data.cache_dir = cache_dir
    ds = build_from_config(cfg, progress)
    recorded = checkpoint_path.parent / "split.csv"
    if ck.get("split_record") is not None:  # a shipped model carries its held-out slices
        record = pd.DataFrame(ck["split_record"], dtype=str)
        rows = recorded_rows(ds.cache.table, record, split, checkpoint_path)
    elif recorded.exists():
        rows = recorded_rows(ds.cache.table, recorded, split)
    else:
        warnings.warn(
            f"{recorded} is missing: evaluating the {split!r} split drawn again from the run's "
            "sources, which holds the training patients out only if the data are unchanged",
            stacklevel=3,
        )
        rows = ds.rows(split)
    if not len(rows):
        raise InputError(checkpoint_path, f"the run's {split!r} split is empty")
    return ds.cache, rows


def recorded_rows(
    cache_table: pd.DataFrame,
    split_csv: Path | pd.DataFrame,
    split: str,
    where: Path | None = None,
) -> np.ndarray:
    """The cache rows of the slices that ``split_csv`` (written by ``fit``) put in ``split``.

    The split is read back rather than drawn again: a scan added to a source since training
    reshuffles the patients, and a redrawn test split could then hold training patients. Slices
    of the recorded split that the data no longer hold are left out with a warning."""
    if isinstance(split_csv, pd.DataFrame):
        rec, split_csv = split_csv, where or "split record"
    else:
        try:
            rec = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as e:
            raise InputError(split_csv, f"unreadable split record: {e}") from e
    missing_cols = {"image", "index", "patient", "source", "split"} - set(rec.columns)
    if missing_cols:
        raise InputError(split_csv, f"not a split record: no {sorted(missing_cols)} column")
    wanted = set(slice_keys(rec[rec["split"] == split]))
    keys = slice_keys(cache_table)
    rows = np.flatnonzero(keys.isin(wanted).to_numpy())
    lost = len(wanted) - len(set(keys.iloc[rows]))
    if lost:
        warnings.warn(
            f"{split_csv}: {lost} of the {len(wanted)} {split!r} slices it records are no "
            "longer in the run's sources; evaluating the rest",
            stacklevel=3,
        )
    return rows


def evaluate(
    checkpoint_path: str | Path | None,
    out: str | Path,
    *,
    data: list[str] | None = None,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 32,
    n_boot: int = 1000,
    cache_dir: str | None = None,
    progress: bool = True,
    crf: bool = False,
    lung_only: bool = False,
    nsd_tolerance: float = DEFAULT_TOLERANCE,
) -> dict:
    """Evaluate a checkpoint on ``data`` (never seen in training) or on its run's ``split``.

    With ``crf`` the segmentation probabilities are refined by :func:`lungmtl.crf.crf_refine`
    before any metric (compare two evaluations with ``lungmtl compare`` to measure its effect).

    With ``lung_only`` the infection probability is zeroed outside the derived lung mask
    (dilated by 2 pixels, so pleural lesions survive): infection lies in the lung by definition,
    and the mask is computed from the image alone, as at inference time.

    ``per_volume`` scores each patient's stack of masked slices (3 or more) as one volume: Dice,
    normalised surface Dice within ``nsd_tolerance`` pixels, and the infected volume's error
    (see :mod:`lungmtl.volume_metrics`).

    Writes ``metrics.json``, ``predictions.csv``, ``report.md``, ``confusion.png``,
    ``roc.png`` and ``overlays.png`` into ``out``; returns the metrics dict.
    """
    out = Path(out)
    checkpoint_path = checkpoint.resolve(
        default_checkpoint() if checkpoint_path is None else checkpoint_path
    )
    ck = checkpoint.read(checkpoint_path)
    if "run_config" not in ck:
        raise InputError(checkpoint_path, "checkpoint has no run config (not written by fit)")
    cfg: RunConfig = from_dict(RunConfig, ck["run_config"], "checkpoint run_config")
    if ck.get("split_record") is not None and os.environ.get("LUNGMTL_DATA"):
        # A shipped model was trained on ../shared/data; $LUNGMTL_DATA says where it is here.
        cfg.data.sources = [os.environ["LUNGMTL_DATA"]]
    dev = resolve_device(device)
    model = prepare_model(checkpoint.load(checkpoint_path), dev)
    cache, rows = _select(checkpoint_path, ck, data, split, cfg, cache_dir, progress)
    tensors = SliceTensors(cache, rows)
    pred = gate_masks(predict_tensors(model, tensors, dev, batch_size), ck.get("mask_gate"))
    if crf:
        from .crf import crf_refine

        pred = pred._replace(seg_prob=crf_refine(pred.seg_prob, device=dev))
    if lung_only:
        pred = pred._replace(seg_prob=restrict_to_lung(pred.seg_prob, cache.lungs[rows]))

    frame = cache.table.iloc[rows].reset_index(drop=True)
    frame["pos"] = np.arange(len(frame))
    frame["y"] = (frame["label"] == "infected").astype(int)
    frame["p_infected"] = pred.p_infected
    frame["pred_label"] = np.where(pred.p_infected >= THRESHOLD, "infected", "healthy")
    frame["correct"] = (pred.p_infected >= THRESHOLD).astype(int) == frame["y"]
    frame["has_mask"] = frame["has_mask"].astype(bool)
    masks = tensors.mask.numpy()[:, 0]
    seg = SegmentationAccumulator()
    hm = frame["has_mask"].to_numpy()
    for k in ("dice", "iou"):
        frame[k] = np.nan
    if hm.any():
        seg.update(pred.seg_prob[hm], masks[hm])
        per = seg.per_slice()
        frame.loc[hm, "dice"] = per["dice"]
        frame.loc[hm, "iou"] = per["iou"]
    frame["pred_area"] = (pred.seg_prob >= THRESHOLD).sum(axis=(1, 2))
    frame["lesion_share"] = np.where(hm, (masks > 0).mean(axis=(1, 2)), np.nan)

    metrics = metric_block(frame, pred.seg_prob, masks)
    metrics["per_source"] = {
        src: metric_block(part, pred.seg_prob, masks)
        for src, part in frame.groupby("source", sort=True)
    }
    metrics["patient"] = patient_block(frame)
    metrics["dice_by_lesion_size"] = lesion_size_block(frame)
    # Without the slices of infected studies: labels true of each slice. Where a study-labelled
    # source also holds most healthy slices (MosMed here), this drops the one infected class
    # that shares their source and flatters a source shortcut; the headline keeps them.
    truth = slice_truth(frame)
    metrics["slice_truth_only"] = classification_block(frame[truth])
    metrics["per_volume"] = per_volume_block(
        frame,
        pred.seg_prob >= THRESHOLD,
        masks,
        cache.lungs[rows],
        tolerance=nsd_tolerance,
        n_boot=n_boot,
    )
    # Intervals resample patients, not slices: a patient's slices are correlated.
    frame["group"] = frame["source"].astype(str) + "/" + frame["patient"].astype(str)
    inf = hm & (frame["y"] == 1).to_numpy() & (frame["lesion_share"] > 0).to_numpy()

    def ci(rows: np.ndarray, column: str):
        if not rows.any():
            return None
        values = frame.loc[rows, column].to_numpy(float)
        return bootstrap_ci(values, n_boot=n_boot, groups=frame.loc[rows, "group"].to_numpy())

    metrics["ci95"] = {
        "accuracy": ci(np.ones(len(frame), bool), "correct"),
        "dice_mean": ci(hm, "dice"),
        "dice_infected_mean": ci(inf, "dice"),
        "resampled": "patients",
    }
    metrics["threshold"] = THRESHOLD
    metrics["crf"] = bool(crf)
    metrics["mask_gate"] = ck.get("mask_gate")
    metrics["lung_only"] = bool(lung_only)
    # Unreadable slices are skipped, not fatal, when evaluating new data: say how many, and which.
    skipped = skipped_report(cache)
    metrics["skipped_slices"] = len(skipped) if data else 0
    metrics["checkpoint"] = str(checkpoint_path)
    metrics["data"] = list(data) if data else f"run split: {split}"
    metrics["confusion"] = classification_metrics(
        frame["y"].to_numpy(), pred.p_infected, threshold=THRESHOLD
    )["confusion"]
    metrics = _clean(metrics)

    out.mkdir(parents=True, exist_ok=True)
    # metrics.json marks a finished evaluation (experiments skip those): drop an old one first,
    # write it last and atomically, so a crash in between never leaves it beside stale files.
    (out / "metrics.json").unlink(missing_ok=True)
    keep = [
        "image",
        "index",
        "source",
        "patient",
        "slice",
        "label",
        "label_level",
        "has_mask",
        "p_infected",
        "pred_label",
        "correct",
        "dice",
        "iou",
        "pred_area",
        "lesion_share",
        "slice_truth",
    ]
    frame["slice_truth"] = truth
    frame[keep].to_csv(out / "predictions.csv", index=False)
    if data and len(skipped):
        skipped.to_csv(out / "skipped.csv", index=False)
    confusion_png(metrics["confusion"], out / "confusion.png")
    roc_png(frame["y"].to_numpy(), pred.p_infected, out / "roc.png", metrics["auc"])
    _overlays(frame, tensors, pred.seg_prob, masks, out / "overlays.png")
    _report(metrics, out / "report.md")
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _overlays(frame, tensors, seg_prob, masks, path: Path, k: int = 3) -> None:
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


def _report(m: dict, path: Path) -> None:
    rows = {"all": m, **{f"source: {s}": b for s, b in m["per_source"].items()}}
    ci = m["ci95"]

    def ci_s(key: str) -> str:
        v = ci.get(key)
        return f"[{v[0]:.4f}, {v[1]:.4f}]" if v else "n/a"

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

{volume_section(m["per_volume"])}

![confusion](confusion.png) ![roc](roc.png)

![overlays](overlays.png)
"""
    path.write_text(text)
