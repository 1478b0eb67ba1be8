"""Does the lung crop keep every infection pixel? And how large are the lesions, per source?

For every slice of the data: the crop box of ``lungmask.lung_box``, the share of the slice it
keeps, how many infection (and dataset lung) pixels fall outside it, and the lesion area as a
share of the slice. Prints a per-source table.

Usage: python benchmarks/crop_check.py [--data DIR] [--margin 0.06] [--csv PATH]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from lungmtl.data.lungmask import lung_box
from lungmtl.data.preprocess import to_unit
from lungmtl.data.sources import load_slice, load_sources


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LUNGMTL_DATA", "../shared/data"))
    ap.add_argument("--margin", type=float, default=0.06)
    ap.add_argument("--csv", help="also write the per-slice table here")
    a = ap.parse_args()
    rows = []
    for r in load_sources([a.data]).to_dict("records"):
        s = load_slice(r)
        unit = to_unit(s.image, s.kind)
        r0, r1, c0, c1 = lung_box(unit, a.margin)
        h, w = unit.shape
        row = {"source": r["source"], "box_area": (r1 - r0) * (c1 - c0) / (h * w)}
        for name, m in (("infection", s.mask), ("lung", s.lung_mask)):
            m = np.zeros((h, w), bool) if m is None else np.asarray(m) > 0
            row[f"{name}_px"] = int(m.sum())
            row[f"{name}_lost"] = int(m.sum() - m[r0:r1, c0:c1].sum())
        row["lesion_percent"] = 100 * row["infection_px"] / (h * w) if row["infection_px"] else None
        rows.append(row)
    d = pd.DataFrame(rows)
    if a.csv:
        d.to_csv(a.csv, index=False)
    g = d.groupby("source").agg(
        slices=("box_area", "size"),
        box_area=("box_area", "mean"),
        whole=("box_area", lambda x: float((x > 0.999).mean())),
        infection_px=("infection_px", "sum"),
        infection_lost=("infection_lost", "sum"),
        lung_px=("lung_px", "sum"),
        lung_lost=("lung_lost", "sum"),
        lesion_p10=("lesion_percent", lambda x: x.dropna().quantile(0.1)),
        lesion_median=("lesion_percent", lambda x: x.dropna().median()),
    )
    print(f"margin {a.margin}; box_area = mean share of the slice kept; whole = share not cropped")
    print(g.round(4).to_string())
    total, lost = int(d["infection_px"].sum()), int(d["infection_lost"].sum())
    share = 100 * lost / max(total, 1)
    print(f"\ninfection pixels outside the box: {lost} of {total} ({share:.4f}%)")


if __name__ == "__main__":
    main()
