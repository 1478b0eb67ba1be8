"""Build a shipped model: the best checkpoints of runs of one recipe, as one ensemble file.

    python scripts/build_release.py runs/rel-s0 runs/rel-s1 runs/rel-s2 \\
        --name covid-unet-cpu --flips lr --scan-rule rule.json \\
        --out lungmtl/weights/covid-unet-cpu.pt

Every run must share its config (but the seed) and its patient split; the file carries the run
config, the scan rule, the held-out (validation and test) slices of the split, and float16 weights.
It prints the sha256 to enter in lungmtl/models/shipped.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from lungmtl.config import comparable
from lungmtl.mask_rule import MaskRule
from lungmtl.models import checkpoint
from lungmtl.models.ensemble import Ensemble
from lungmtl.models.shipped import sha256
from lungmtl.scan_rule import ScanRule

SPLIT_COLUMNS = ["source", "patient", "image", "index", "split"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--flips", nargs="*", default=[], help="test-time flips: lr ud lrud")
    ap.add_argument("--scan-rule", type=Path, help="JSON of the ScanRule chosen on validation")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mask-gate", type=float, help="masks only on slices with P(infected) >= this")
    ap.add_argument("--mask-rule", type=Path, help="JSON of the MaskRule chosen on validation")
    args = ap.parse_args(argv)

    restored = [checkpoint.restore(r) for r in args.runs]
    cks = [r.meta for r in restored]
    # Where the data and cache lay may differ; the data themselves are checked by the split.
    ignore = ("train.seed", "train.device", "data.sources", "data.cache_dir")
    configs = [comparable(ck["run_config"], ignore) for ck in cks]
    if any(c != configs[0] for c in configs):
        sys.exit("the runs differ in more than their seed: not one recipe")
    splits = [pd.read_csv(r / "split.csv", dtype=str, keep_default_na=False) for r in args.runs]
    keys = [s[SPLIT_COLUMNS].sort_values(SPLIT_COLUMNS).to_numpy().tolist() for s in splits]
    if any(k != keys[0] for k in keys):
        sys.exit("the runs were trained on different patient splits")
    held_out = splits[0].loc[splits[0]["split"] != "train", SPLIT_COLUMNS].copy()
    # Slices are matched by source, patient, file name and index: no local paths in the file.
    held_out["image"] = held_out["image"].map(lambda p: Path(p).name)
    model = Ensemble([r.model for r in restored], args.flips)
    mask_rule = (
        MaskRule.from_dict(json.loads(args.mask_rule.read_text())).to_dict()
        if args.mask_rule
        else None
    )
    rule = ScanRule.from_dict(json.loads(args.scan_rule.read_text())) if args.scan_rule else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(
        model,
        args.out,
        half=True,
        # The data as documented (../shared/data, or $LUNGMTL_DATA), not this machine's path.
        run_config={
            **cks[0]["run_config"],
            "data": {
                **cks[0]["run_config"]["data"],
                "sources": ["../shared/data"],
                "cache_dir": "~/.cache/lungmtl",
            },
        },
        seeds=[ck["run_config"]["train"]["seed"] for ck in cks],
        epochs=[int(ck.get("epoch", -1)) + 1 for ck in cks],
        model_name=args.name,
        mask_gate=args.mask_gate,
        mask_rule=mask_rule,
        scan_rule=None if rule is None else rule.to_dict(),
        split_record=held_out.to_dict(orient="list"),
    )
    size = args.out.stat().st_size / 1e6
    print(f"{args.out}: {size:.2f} MB, {len(cks)} member(s), flips {args.flips}")
    print(f"sha256 {sha256(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
