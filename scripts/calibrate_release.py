"""Give a shipped model the calibration of its P(infected), fitted on its validation split.

    python scripts/calibrate_release.py lungmtl/weights/covid-unet-cpu-v2.pt \\
        --out lungmtl/weights/covid-unet-cpu-v2.pt

The kind (none, temperature scaling, Platt scaling on the logit) is chosen by 5-fold
cross-validation over the validation patients (lowest held-out log-loss,
:func:`lungmtl.calibration.fit.choose_kind`), then fitted on all of them. The checkpoint's
scan rule is moved onto the calibrated P (same verdicts); the scan score gets its own Platt
fit. The weights are not touched; the file is rewritten atomically and the new sha256 is
printed for lungmtl/models/shipped.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from lungmtl.calibration.fit import fit_site
from lungmtl.calibration.model import Calibration
from lungmtl.calibration.run import model_outputs
from lungmtl.models import checkpoint
from lungmtl.models.shipped import sha256
from lungmtl.scan_rule import ScanRule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", default="val")
    args = ap.parse_args(argv)
    os.environ.setdefault("LUNGMTL_DATA", "../shared/data")
    restored = checkpoint.restore(args.checkpoint)
    ck = restored.meta
    table = model_outputs(
        args.checkpoint, ck, restored.model, data=None, split=args.split, progress=False
    )
    raw_rule = ScanRule.from_dict(ck["scan_rule"]) if ck.get("scan_rule") else ScanRule()
    where = f"the {args.split!r} split of {ck.get('model_name') or args.checkpoint.name}"
    cal = fit_site(
        table,
        prior=Calibration(),
        base_rule=raw_rule,
        n_boot=1000,
        where=where,
        fit_scan_rule=False,
        kind="auto",
    )
    cal = dataclasses.replace(
        cal, origin="validation", model={"name": ck.get("model_name") or args.checkpoint.name}
    )
    for name, r in cal.fitted["cross_validation"].items():
        print(f"{name:12s} held-out log-loss {r['log_loss']:.4f}  ECE {r['ece']:.4f}  "
              f"Brier {r['brier']:.4f}")  # fmt: skip
    print(f"chosen: {cal.fitted['kind']}; {cal.describe()}; scan rule {cal.scan_rule.describe()}")
    payload = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    payload["calibration"] = cal.to_dict()
    checkpoint.atomic_torch_save(payload, args.out)
    print(f"{args.out}: sha256 {sha256(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
