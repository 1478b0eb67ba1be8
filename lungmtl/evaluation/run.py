"""evaluate(): metrics.json (overall, per source, per patient, CIs), predictions.csv, report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..calibration import Calibration, reliability_png
from ..config import RunConfig, from_dict
from ..data.cache import skipped_report
from ..data.dataset import SliceTensors
from ..device import prepare_model, resolve_device
from ..errors import InputError
from ..files import write_text
from ..forward import slice_probabilities
from ..mask_rule import MaskRule
from ..metrics import (
    THRESHOLD,
    SegmentationAccumulator,
    classification_metrics,
)
from ..models import checkpoint
from ..models.shipped import default_checkpoint, sha256
from ..presentation import (
    burden_scatter_png,
    confusion_png,
    roc_png,
)
from ..scan_rule import ScanRule
from .blocks import (
    calibration_metrics,
    ci95_block,
    classification_block,
    json_safe,
    lesion_size_block,
    metric_block,
    patient_block,
    restrict_to_lung,
    slice_truth,
)
from .report import has_burden, overlays, write_report
from .select import select_rows
from .volumes import DEFAULT_TOLERANCE, per_volume_block


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
    mask_rule: MaskRule | None = None,
    calibration: str | Path | None = None,
) -> dict:
    """Evaluate a checkpoint on ``data`` (never seen in training) or on its run's ``split``.

    With ``crf`` the segmentation probabilities are refined by :func:`lungmtl.crf.crf_refine`
    before any metric (compare two evaluations with ``lungmtl compare`` to measure its effect).

    With ``lung_only`` the infection probability is zeroed outside the derived lung mask
    (dilated by 2 pixels, so pleural lesions survive): infection lies in the lung by definition,
    and the mask is computed from the image alone, as at inference time.

    ``mask_rule`` decides which slices keep their map (default: the checkpoint's, see
    :class:`lungmtl.mask_rule.MaskRule`).

    P(infected) is the checkpoint's calibrated P, or a site file's (``calibration``, written by
    ``lungmtl calibrate`` for this checkpoint), whose slice threshold then replaces 0.5; the
    maps are never changed by a calibration. metrics.json's ``calibration`` block and
    ``reliability.png`` say how well P means what it says (ECE, Brier), per source and per scan.

    ``per_volume`` scores each patient's stack of masked slices (3 or more) as one volume: Dice,
    normalised surface Dice within ``nsd_tolerance`` pixels, and the infected volume's error
    (see :mod:`lungmtl.evaluation.volumes`).

    Writes ``metrics.json``, ``predictions.csv``, ``report.md``, ``confusion.png``,
    ``roc.png`` and ``overlays.png`` into ``out``; returns the metrics dict.
    """
    out = Path(out)
    checkpoint_path = checkpoint.resolve(
        default_checkpoint() if checkpoint_path is None else checkpoint_path
    )
    restored = checkpoint.restore(checkpoint_path)
    ck = restored.meta
    if "run_config" not in ck:
        raise InputError(checkpoint_path, "checkpoint has no run config (not written by fit)")
    cfg: RunConfig = from_dict(RunConfig, ck["run_config"], "checkpoint run_config")
    cal = Calibration.of_checkpoint(ck)
    if calibration is not None:  # checked before the model runs over the data
        cal = Calibration.load(calibration)
        cal.check_model(sha256(checkpoint_path), ck.get("model_name") or checkpoint_path.name)
    if ck.get("split_record") is not None and os.environ.get("LUNGMTL_DATA"):
        # A shipped model was trained on ../shared/data; $LUNGMTL_DATA says where it is here.
        cfg.data.sources = [os.environ["LUNGMTL_DATA"]]
    dev = resolve_device(device)
    model = prepare_model(restored.model, dev)
    cache, rows = select_rows(checkpoint_path, ck, data, split, cfg, cache_dir, progress)
    tensors = SliceTensors(cache, rows)
    pred = slice_probabilities(model, tensors.image, dev, batch_size)
    mask_rule = MaskRule.of_checkpoint(ck) if mask_rule is None else mask_rule
    pred = mask_rule.apply(pred)  # on the model's own P, as the rule was chosen
    threshold = cal.threshold if cal.origin == "site" else THRESHOLD
    p_model = pred.p_infected
    pred = pred._replace(p_infected=cal.apply(p_model))
    if crf:
        from ..crf import crf_refine

        pred = pred._replace(seg_prob=crf_refine(pred.seg_prob, device=dev))
    if lung_only:
        pred = pred._replace(seg_prob=restrict_to_lung(pred.seg_prob, cache.lungs[rows]))

    frame = cache.table.iloc[rows].reset_index(drop=True)
    frame["pos"] = np.arange(len(frame))
    frame["y"] = (frame["label"] == "infected").astype(int)
    frame["p_infected"] = pred.p_infected
    frame["p_model"] = p_model
    frame["pred_label"] = np.where(pred.p_infected >= threshold, "infected", "healthy")
    frame["correct"] = (pred.p_infected >= threshold).astype(int) == frame["y"]
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

    metrics = metric_block(frame, pred.seg_prob, masks, threshold)
    metrics["per_source"] = {
        src: metric_block(part, pred.seg_prob, masks, threshold)
        for src, part in frame.groupby("source", sort=True)
    }
    metrics["patient"] = patient_block(frame, threshold)
    metrics["dice_by_lesion_size"] = lesion_size_block(frame)
    # Without the slices of infected studies: labels true of each slice. Where a study-labelled
    # source also holds most healthy slices (MosMed here), this drops the one infected class
    # that shares their source and flatters a source shortcut; the headline keeps them.
    truth = slice_truth(frame)
    metrics["slice_truth_only"] = classification_block(frame[truth], threshold)
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
    raw_rule = ScanRule.from_dict(ck["scan_rule"]) if ck.get("scan_rule") else ScanRule()
    metrics["calibration"] = calibration_metrics(frame, cal, cal.scan_rule or cal.moved(raw_rule))

    metrics["ci95"] = ci95_block(frame, n_boot)
    metrics["threshold"] = threshold
    metrics["crf"] = bool(crf)
    metrics["mask_rule"] = {**mask_rule.to_dict(), "text": mask_rule.describe()}
    metrics["lung_only"] = bool(lung_only)
    # Unreadable slices are skipped, not fatal, when evaluating new data: say how many, and which.
    skipped = skipped_report(cache)
    metrics["skipped_slices"] = len(skipped) if data else 0
    metrics["checkpoint"] = str(checkpoint_path)
    metrics["data"] = list(data) if data else f"run split: {split}"
    metrics["confusion"] = classification_metrics(
        frame["y"].to_numpy(), pred.p_infected, threshold=threshold
    )["confusion"]
    metrics = json_safe(metrics)

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
        "p_model",
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
    overlays(frame, tensors, pred.seg_prob, masks, out / "overlays.png")
    c = metrics["calibration"]
    curves = {"model's own P": c["slice_model"], "calibrated P": c["slice"]}
    curves.update({f"{s} (calibrated)": b for s, b in c["per_source"].items()})
    reliability_png(curves, out / "reliability.png", "reliability of P(infected), slices")
    if has_burden(metrics["per_volume"]):
        burden_scatter_png(metrics["per_volume"]["volumes"], out / "burden.png")
    write_report(metrics, out / "report.md")
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
