"""``lungmtl evaluate --predictions``: masks made by any other model (nnU-Net's output folder
among them) scored against an nnU-Net export of lungmtl's data, with lungmtl's own metric
blocks, so that the two rows of a comparison are computed the same way.

Predictions are matched to cases by name (``lungmtl_cases.csv`` of the export): ``CASE.png``,
``CASE.nii.gz`` or ``CASE.nii`` (nnU-Net and most tools), or ``CASE_0000/mask.nii.gz`` (a
``lungmtl predict`` of the export's images). Masks are scored at the export's native size;
size-dependent figures (pixel accuracy, MSE, PSNR, SSIM) are left out. P(infected) per slice is
the largest class-1 probability of nnU-Net's ``CASE.npz`` (``--save_probabilities``), or
lungmtl's ``slices.csv``, else 1 where anything is outlined and 0 elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.image import NIFTI_SUFFIXES, suffix_of
from ..data.io import read_image, read_mask
from ..data.lungmask import derive_lung_mask
from ..data.nnunet import CASES_FILE, CHANNEL
from ..errors import InputError
from ..files import write_text
from ..metrics import THRESHOLD, dice, iou
from .blocks import (
    ci95_block,
    classification_block,
    json_safe,
    lesion_size_block,
    patient_block,
    slice_truth,
)
from .volumes import DEFAULT_TOLERANCE, per_volume_block


class SliceList:
    """Slices of different sizes behind the ``array[positions]`` indexing that the volume
    metrics use (one patient's slices share a size)."""

    def __init__(self, items: list[np.ndarray]):
        self.items = items

    def __getitem__(self, pos) -> np.ndarray:
        return np.stack([self.items[int(i)] for i in np.atleast_1d(pos)])


def _find(pred_dir: Path, case: str) -> Path | None:
    for name in (f"{case}.png", f"{case}.nii.gz", f"{case}.nii", f"{case}{CHANNEL}/mask.nii.gz"):
        if (pred_dir / name).is_file():
            return pred_dir / name
    return None


def _read_pred(path: Path, shape: tuple[int, int]) -> np.ndarray:
    arr = read_mask(path).astype(np.int64)
    if suffix_of(path) in NIFTI_SUFFIXES:
        arr = np.squeeze(arr)  # a 2D case stored as a one-slice volume
    if arr.shape != shape:
        raise InputError(path, f"prediction of shape {arr.shape}, but the case is {shape}")
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:
        raise InputError(path, f"label values {sorted(values)[:6]}: expected 0 and 1")
    return arr.astype(bool)


def _p_infected(path: Path, pred: np.ndarray) -> float:
    """Slice P(infected): nnU-Net's probabilities, lungmtl's slices.csv, else the outline."""
    npz = path.with_name(path.name.split(".")[0] + ".npz")
    if npz.is_file():
        with np.load(npz) as z:
            probs = z["probabilities"]
        return float(np.max(probs[1]))
    csv = path.parent / "slices.csv"
    if path.name == "mask.nii.gz" and csv.is_file():
        return float(pd.read_csv(csv)["p_infected"].max())
    return float(pred.any())


def evaluate_predictions(
    predictions: str | Path,
    truth: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    n_boot: int = 1000,
    nsd_tolerance: float = DEFAULT_TOLERANCE,
) -> dict:
    """Score the masks in ``predictions`` against the cases of ``split`` in the nnU-Net export
    ``truth`` (``lungmtl data export --format nnunet``); writes metrics.json, predictions.csv and
    report.md into ``out`` like ``evaluate``.

    Raises:
        InputError: no export at ``truth``, predictions missing for some cases (listed), a
            prediction of the wrong size or with values other than 0/1 (named).
    """
    pred_dir, root, out = Path(predictions), Path(truth), Path(out)
    if not (root / CASES_FILE).is_file():
        raise InputError(root, f"no {CASES_FILE}: not a lungmtl nnU-Net export")
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "no such folder of predictions")
    cases = pd.read_csv(root / CASES_FILE, dtype=str, keep_default_na=False)
    cases = cases[cases["split"] == split].reset_index(drop=True)
    if cases.empty:
        raise InputError(root, f"the export holds no {split!r} cases")
    found = {c: _find(pred_dir, c) for c in cases["case"]}
    missing = [c for c, p in found.items() if p is None]
    if missing:
        raise InputError(
            pred_dir,
            f"no prediction for {len(missing)} of {len(cases)} {split} case(s), e.g. "
            f"{', '.join(missing[:5])} (looked for CASE.png, CASE.nii.gz, "
            f"CASE{CHANNEL}/mask.nii.gz)",
        )
    part = "Ts" if split == "test" else "Tr"
    preds, masks, lungs, p_inf = [], [], [], []
    for case in cases["case"]:
        true = read_mask(root / f"labels{part}" / f"{case}.png").astype(bool)
        image = read_image(root / f"images{part}" / f"{case}{CHANNEL}.png").array
        pred = _read_pred(found[case], true.shape)
        preds.append(pred)
        masks.append(true.astype(np.uint8))
        lungs.append(derive_lung_mask(np.asarray(image, np.float32) / 255.0))
        p_inf.append(_p_infected(found[case], pred))
    frame = cases.assign(
        pos=np.arange(len(cases)),
        y=(cases["label"] == "infected").astype(int),
        has_mask=cases["mask"] != "",
        p_infected=p_inf,
    )
    frame["pred_label"] = np.where(frame["p_infected"] >= THRESHOLD, "infected", "healthy")
    frame["correct"] = (frame["p_infected"] >= THRESHOLD).astype(int) == frame["y"]
    hm = frame["has_mask"].to_numpy()
    frame["dice"] = [dice(p, t) if h else np.nan for p, t, h in zip(preds, masks, hm, strict=True)]
    frame["iou"] = [iou(p, t) if h else np.nan for p, t, h in zip(preds, masks, hm, strict=True)]
    frame["pred_area"] = [int(p.sum()) for p in preds]
    frame["lesion_share"] = [
        float(t.mean()) if h else np.nan for t, h in zip(masks, hm, strict=True)
    ]
    frame["group"] = frame["source"] + "/" + frame["patient"]

    def block(part: pd.DataFrame) -> dict:
        b = classification_block(part)
        b["n_slices_with_mask"] = int(part["has_mask"].sum())
        b["dice_mean"] = part.loc[part["has_mask"], "dice"].mean()
        b["dice_infected_mean"] = part.loc[
            part["has_mask"] & (part["y"] == 1) & (part["lesion_share"] > 0), "dice"
        ].mean()
        b["iou_mean"] = part.loc[part["has_mask"], "iou"].mean()
        return b

    metrics = block(frame)
    metrics["per_source"] = {s: block(g) for s, g in frame.groupby("source", sort=True)}
    metrics["patient"] = patient_block(frame)
    metrics["slice_truth_only"] = classification_block(frame[slice_truth(frame)])
    metrics["dice_by_lesion_size"] = lesion_size_block(frame)
    metrics["per_volume"] = per_volume_block(
        frame, SliceList(preds), SliceList(masks), SliceList(lungs),
        tolerance=nsd_tolerance, n_boot=n_boot,
    )  # fmt: skip
    metrics["ci95"] = ci95_block(frame, n_boot)
    metrics["threshold"] = THRESHOLD
    metrics["predictions"] = str(pred_dir)
    metrics["truth"] = f"{root} ({split})"
    metrics["grid"] = "native size of the export (size-dependent figures left out)"
    metrics = json_safe(metrics)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    keep = ["case", "image", "index", "source", "patient", "slice", "label", "label_level",
            "has_mask", "p_infected", "pred_label", "correct", "dice", "iou", "pred_area",
            "lesion_share"]  # fmt: skip
    frame[keep].to_csv(out / "predictions.csv", index=False)
    write_text(out / "report.md", _report(metrics))
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _report(m: dict) -> str:
    from ..presentation import CLS_COLUMNS, markdown_table, volume_section

    rows = {"all": m, **{f"source: {s}": b for s, b in m["per_source"].items()}}
    dice_rows = "\n".join(
        f"| {k} | {b['n_slices_with_mask']} | {b['dice_mean']:.4f} | "
        f"{'n/a' if b['dice_infected_mean'] is None else format(b['dice_infected_mean'], '.4f')} |"
        for k, b in rows.items()
        if b["dice_mean"] is not None
    )
    return f"""# Evaluation of foreign predictions

Predictions: `{m["predictions"]}`; truth: `{m["truth"]}`; scored on the {m["grid"]}.

## Segmentation (slices with a mask; empty-vs-empty counts as Dice 1)

| | slices | Dice | Dice infected |
|---|---|---|---|
{dice_rows}

95% intervals (patients resampled): Dice {m["ci95"]["dice_mean"]}, Dice infected
{m["ci95"]["dice_infected_mean"]}.

## Classification (P(infected) as described in lungmtl.evaluation.foreign)

{markdown_table(rows, CLS_COLUMNS)}

## Per volume

{volume_section(m["per_volume"])}
"""
