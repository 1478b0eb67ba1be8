"""Compare and choose the mask rule (which slices keep their infection map) of a checkpoint.

    python benchmarks/mask_rule.py --checkpoint /tmp/cand.pt --split val --choose --out rule.json
    python benchmarks/mask_rule.py --checkpoint runs/loso-m2-b --data ../shared/data/medseg-covid2

Scores every rule of the grid (hard gate, none, soft, evidence with its area and confidence) on
the same forward pass: Dice over infected slices, per-scan Dice, percent-of-lung error and bias,
relative volume error (scans >= 0.5% of lung), Dice on small lesions (< 1% of the slice) and the
false-positive outline on slices with an empty true mask (pixels per slice, and % of lung on
label-only healthy slices). ``--choose`` keeps the rule with the best mean of per-scan Dice and
infected-slice Dice whose healthy-slice false-positive area is at most ``--max-fp-ratio`` times
that of the hard gate, and writes it as JSON for ``scripts/build_release.py --mask-rule``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lungmtl.config import RunConfig, from_dict
from lungmtl.data.dataset import SliceTensors
from lungmtl.evaluation.select import select_rows
from lungmtl.evaluation.volumes import per_volume_block
from lungmtl.forward import slice_probabilities
from lungmtl.mask_rule import MaskRule
from lungmtl.metrics import SegmentationAccumulator
from lungmtl.models import checkpoint
from lungmtl.models.shipped import default_checkpoint


def rules() -> list[MaskRule]:
    out = [MaskRule("gate", 0.5), MaskRule("none"), MaskRule("soft")]
    out += [MaskRule("gate", g) for g in (0.2, 0.3)]
    for area in (10, 25, 50, 100, 200):
        for conf in (0.6, 0.7, 0.8, 0.9):
            out.append(MaskRule("evidence", 0.5, area, conf))
    return out


def score(rule: MaskRule, pred, frame, masks, lungs) -> dict:
    seg = rule.apply(pred).seg_prob
    hm = frame["has_mask"].to_numpy()
    acc = SegmentationAccumulator()
    acc.update(seg[hm], masks[hm])
    dice = acc.per_slice()["dice"]
    share = masks[hm].mean(axis=(1, 2))
    inf = share > 0
    outline = seg >= 0.5
    pv = per_volume_block(frame, outline, masks, lungs, n_boot=200)
    empty = hm.copy()
    empty[hm] = ~inf
    label_only_healthy = (~hm) & (frame["label"] == "healthy").to_numpy()
    lung_px = np.maximum(lungs.sum(axis=(1, 2)), 1)
    return {
        "rule": rule.describe(),
        "dice_infected": float(dice[inf].mean()) if inf.any() else None,
        "dice_small": float(dice[inf & (share < 0.01)].mean())
        if (inf & (share < 0.01)).any()
        else None,
        "n_small": int((inf & (share < 0.01)).sum()),
        "scan_dice": pv["dice_mean"],
        "n_scans": pv["n_volumes"],
        "lung_pct_mae": pv["lung_pct_mae"],
        "lung_pct_bias": pv.get("lung_pct_bias"),
        "rel_vol_mae": pv["relative_volume_mae"],
        "fp_px_empty": float(outline[empty].sum(axis=(1, 2)).mean()) if empty.any() else None,
        "n_empty": int(empty.sum()),
        "fp_lung_pct_healthy": (
            float((100 * (outline & lungs).sum(axis=(1, 2)) / lung_px)[label_only_healthy].mean())
            if label_only_healthy.any()
            else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="run folder, .pt or shipped name")
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--data", nargs="*", help="score new data (e.g. a held-out source) instead")
    ap.add_argument("--choose", action="store_true")
    ap.add_argument("--max-fp-ratio", type=float, default=1.5)
    ap.add_argument("--out", type=Path, help="write the chosen rule (JSON)")
    ap.add_argument("--json", type=Path, help="write every rule's scores (JSON)")
    args = ap.parse_args(argv)

    path = checkpoint.resolve(args.checkpoint or default_checkpoint())
    restored = checkpoint.restore(path)
    cfg: RunConfig = from_dict(RunConfig, restored.meta["run_config"], "run_config")
    cache, rows = select_rows(path, restored.meta, args.data, args.split, cfg, None, False)
    tensors = SliceTensors(cache, rows)
    torch.set_grad_enabled(False)
    pred = slice_probabilities(restored.model, tensors.image, torch.device("cpu"), 32)
    frame = cache.table.iloc[rows].reset_index(drop=True)
    frame["pos"] = np.arange(len(frame))
    frame["has_mask"] = frame["has_mask"].astype(bool)
    masks = tensors.mask.numpy()[:, 0]
    lungs = cache.lungs[rows].astype(bool)
    results = [(r, score(r, pred, frame, masks, lungs)) for r in rules()]
    where = args.data or f"split {args.split}"
    print(f"{path} on {where}: {len(frame)} slices, {int(frame['has_mask'].sum())} with a mask")
    keys = list(results[0][1])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for _, s in results:
        print("| " + " | ".join(_fmt(s[k]) for k in keys) + " |")
    if args.json:
        args.json.write_text(json.dumps([{**r.to_dict(), **s} for r, s in results], indent=2))
    if args.choose:
        fp0 = results[0][1]["fp_px_empty"] or 0.0
        ok = [
            (r, s)
            for r, s in results
            if s["fp_px_empty"] is None or s["fp_px_empty"] <= args.max_fp_ratio * fp0 + 1e-9
        ]
        if not ok:
            sys.exit("no rule keeps the false-positive area within bounds")
        best, s = max(ok, key=lambda rs: (rs[1]["scan_dice"] or 0) + (rs[1]["dice_infected"] or 0))
        print(f"chosen: {best.describe()}  {best.to_dict()}")
        if args.out:
            args.out.write_text(json.dumps(best.to_dict(), indent=2))
    return 0


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    raise SystemExit(main())
