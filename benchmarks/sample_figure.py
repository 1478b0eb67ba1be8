"""Truth against prediction on the bundled sample (a held-out patient), for the model card.

    python benchmarks/sample_figure.py --out docs/img/sample-prediction.png

Each slice of lungmtl/data/sample: the CT, the radiologists' mask (green outline) and the shipped
model's mask (red), with P(infected) and the slice's Dice. The sample's licence allows this
picture (CC BY-NC-SA, credited in lungmtl/data/sample/README.md); no other data is drawn.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image
from skimage.segmentation import find_boundaries

from lungmtl.demo import SAMPLE
from lungmtl.predict import PredictOptions, predict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="default: the shipped model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cols", type=int, default=6)
    args = ap.parse_args(argv)
    manifest = pd.read_csv(SAMPLE / "manifest.csv")
    with tempfile.TemporaryDirectory() as tmp:
        [r] = predict(args.checkpoint, [SAMPLE], Path(tmp), PredictOptions(report=False))
        if not r.ok:
            raise SystemExit(r.message)
        slices = pd.read_csv(r.out_dir / "slices.csv")
        pred = np.asarray(nib.load(r.out_dir / "mask.nii.gz").dataobj)
    if pred.shape[0] != len(manifest):
        raise SystemExit(f"unexpected mask shape {pred.shape}")
    n = len(manifest)
    rows = -(-n // args.cols)
    fig, axes = plt.subplots(rows, args.cols, figsize=(2.2 * args.cols, 2.4 * rows))
    dices = []
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = np.asarray(Image.open(SAMPLE / manifest["image"][k]).convert("L"))
        truth = np.asarray(Image.open(SAMPLE / manifest["mask"][k]).convert("L")) > 127
        p = pred[k].astype(bool)  # predict stores (z, rows, cols) for slice stacks
        inter = (p & truth).sum()
        dice = 2 * inter / max(p.sum() + truth.sum(), 1)
        dices.append(dice)
        rgb = np.repeat(img[..., None], 3, axis=2).astype(float) / 255
        rgb[find_boundaries(truth)] = (0.1, 0.9, 0.1)
        rgb[find_boundaries(p)] = (1.0, 0.15, 0.15)
        ax.imshow(rgb)
        ax.set_title(
            f"{manifest['slice'][k]}: P {slices['p_infected'][k]:.2f}, Dice {dice:.2f}", fontsize=8
        )
    fig.suptitle(
        "Sample (held-out patient): truth green, shipped model red; "
        f"mean slice Dice {np.mean(dices):.3f}",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=70)
    print(f"{args.out}: mean slice Dice {np.mean(dices):.3f} over {n} slices")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
