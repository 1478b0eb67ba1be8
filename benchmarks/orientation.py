"""Does a slice's orientation matter to the shipped model? Each slice is predicted as it is and
flipped upside down; the two masks (the second flipped back) and P(infected) are compared.

    OMP_NUM_THREADS=1 python benchmarks/orientation.py ../shared/data/medseg100/images --n 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lungmtl.data.io import read_mask
from lungmtl.predict import PredictOptions, predict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args(argv)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    opts = PredictOptions(device="cpu", gradcam=0, report=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "as-is").mkdir()
        (tmp / "flipped").mkdir()
        for f in files[: args.n]:
            im = Image.open(f).convert("L")
            im.save(tmp / "as-is" / f"{f.stem}.png")
            im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(tmp / "flipped" / f"{f.stem}.png")
        runs = {}
        for kind in ("as-is", "flipped"):
            inputs = sorted((tmp / kind).iterdir())
            runs[kind] = {
                r.name: r for r in predict(args.checkpoint, inputs, tmp / f"o-{kind}", opts)
            }
        agree, dp, failed = [], [], 0
        for name, a in runs["as-is"].items():
            b = runs["flipped"][name]
            if not (a.ok and b.ok):
                failed += 1
                continue
            ma = read_mask(a.out_dir / "mask.nii.gz")[0].astype(bool)
            mb = read_mask(b.out_dir / "mask.nii.gz")[0][::-1].astype(bool)
            total = ma.sum() + mb.sum()
            agree.append(1.0 if total == 0 else 2 * (ma & mb).sum() / total)
            dp.append(abs(a.summary["max_p_infected"] - b.summary["max_p_infected"]))
    print(
        f"{len(agree)} slices ({failed} failed): mask agreement Dice median {np.median(agree):.3f}"
        f" (min {np.min(agree):.3f}); |P as-is - P flipped| median {np.median(dp):.4f}, "
        f"max {np.max(dp):.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
