"""Simulated new sites for site calibration (issue 22, docs/calibration.md).

    OMP_NUM_THREADS=1 python benchmarks/calibration_sites.py \\
        --site medseg-covid2=runs/v2sel/runs/v2-all-without-medseg-covid2-seed0 \\
        --site mosmed-mid=runs/calsites/runs/v2-without-mosmed-mid-seed0 \\
        --site covid-ct-md=runs/calsites/runs/v2-without-covid-ct-md-seed0 \\
        --out runs/calsim

Each site is a source of ../shared/data holding both classes, scored by a model trained without
it. Its patients are split at random into calibration units (2, 5, 10, 20 of them) and test units
(the rest), many times over: ``lungmtl calibrate``'s fit (:func:`lungmtl.calibration.fit.
fit_site`, with ``--target-sensitivity`` or ``--target-specificity``, else calibrated P >= 0.5)
is made on the calibration units
and scored on the test units, beside the default operating point (the model's P >= 0.5 and the
shipped scan rule, 2 slices in a row at P >= 0.9). A source with fewer than ``--min-patients``
patients (medseg-covid2: 4 volumes, covid-ct-md: 2) is cut into slabs of ``--slab`` consecutive
slices, each slab a unit: calibration and test then share patients, which flatters them (said in
the table). Healthy pseudo-scans are runs of ``--scan-len`` healthy test slices in slice order;
infected pseudo-scans put half as many infected test slices (in slice order) after half as many
healthy ones. Figures: median and 2.5-97.5 percentiles over the repeats that were not refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lungmtl.calibration import calibration_block
from lungmtl.calibration.fit import PRIOR, fit_site, truth_rows
from lungmtl.calibration.model import Calibration
from lungmtl.calibration.run import model_outputs
from lungmtl.calibration.thresholds import Target, threshold_for_sensitivity
from lungmtl.errors import InputError
from lungmtl.models import checkpoint
from lungmtl.scan_rule import ScanRule

#: The shipped model's scan rule (covid-unet-cpu-v2): the default the sites start from.
DEFAULT_RULE = ScanRule(slice_threshold=0.9, min_run=2)


def units(table: pd.DataFrame, min_patients: int, slab: int) -> pd.DataFrame:
    """``unit`` column: the patient, or (few patients) a slab of consecutive slices of one."""
    table = table.copy()
    if table["group"].nunique() >= min_patients:
        table["unit"] = table["group"]
        return table
    table["order"] = pd.to_numeric(table["slice"], errors="coerce")
    table = table.sort_values(["group", "order"], kind="stable")
    rank = table.groupby("group").cumcount()
    table["unit"] = table["group"] + "#" + (rank // slab).astype(str)
    return table


def pseudo_scans(test: pd.DataFrame, p: np.ndarray, length: int, rng) -> tuple[list, list]:
    """Healthy and infected pseudo-scans (arrays of P in slice order) from the test slices."""
    t = test.assign(p=p, key=rng.permutation(test["unit"].nunique())[
        test["unit"].astype("category").cat.codes])  # fmt: skip
    t["order"] = pd.to_numeric(t["slice"], errors="coerce").fillna(0)
    t = t.sort_values(["key", "order"], kind="stable")
    healthy = t.loc[t["y"] == 0, "p"].to_numpy()
    infected = t.loc[t["y"] == 1, "p"].to_numpy()
    h_scans = [healthy[i : i + length] for i in range(0, len(healthy) - length + 1, length)]
    half = length // 2
    n_inf = min(len(infected) // half, len(healthy) // half)
    i_scans = [
        np.r_[healthy[k * half : (k + 1) * half], infected[k * half : (k + 1) * half]]
        for k in range(n_inf)
    ]
    return h_scans, i_scans


def rates(p, y, t: float) -> tuple[float, float]:
    p, y = np.asarray(p), np.asarray(y)
    return float((p[y == 0] < t).mean()), float((p[y == 1] >= t).mean())


def scan_rates(rule: ScanRule, h_scans, i_scans) -> tuple[float | None, float | None]:
    spec = [rule.decide(s, None)["verdict"] == "healthy" for s in h_scans]
    sens = [rule.decide(s, None)["verdict"] == "infected" for s in i_scans]
    return (float(np.mean(spec)) if spec else None, float(np.mean(sens)) if sens else None)


def one_draw(
    table, n, target, scan_len, rng, strength: float = PRIOR, kind: str = "auto"
) -> dict | None:
    names = table["unit"].unique()
    if n >= len(names):
        return None
    chosen = set(rng.choice(names, n, replace=False))
    cal_rows = table["unit"].isin(chosen).to_numpy()
    cal_t = table[cal_rows].assign(group=table.loc[cal_rows, "unit"])
    test = table[~cal_rows]
    try:
        cal = fit_site(
            cal_t,
            prior=Calibration(),
            base_rule=DEFAULT_RULE,
            target=target,
            n_boot=0,
            prior_strength=strength,
            kind=kind,
        )
    except InputError:
        return {"refused": True}
    y = test["y"].to_numpy()
    p0 = test["p_model"].to_numpy()
    p1 = cal.apply(p0)
    h0, i0 = pseudo_scans(test, p0, scan_len, np.random.default_rng(0))
    h1, i1 = pseudo_scans(test, p1, scan_len, np.random.default_rng(0))
    spec0, sens0 = rates(p0, y, 0.5)
    spec1, sens1 = rates(p1, y, cal.threshold)
    sspec0, ssens0 = scan_rates(DEFAULT_RULE, h0, i0)
    sspec1, ssens1 = scan_rates(cal.scan_rule, h1, i1)
    return {
        "refused": False,
        "spec_before": spec0,
        "sens_before": sens0,
        "spec_after": spec1,
        "sens_after": sens1,
        "ece_before": calibration_block(p0, y)["ece"],
        "ece_after": calibration_block(p1, y)["ece"],
        "scan_spec_before": sspec0,
        "scan_sens_before": ssens0,
        "scan_spec_after": sspec1,
        "scan_sens_after": ssens1,
        "n_pseudo_healthy": len(h0),
        "n_pseudo_infected": len(i0),
        "threshold": cal.threshold,
    }


def summarise(draws: list[dict]) -> dict:
    ok = [d for d in draws if d and not d["refused"]]
    out: dict = {"repeats": len(draws), "refused": sum(d["refused"] for d in draws if d)}
    if not ok:
        return out
    for key in [k for k in ok[0] if k != "refused"]:
        v = np.array([d[key] for d in ok if d[key] is not None], float)
        if len(v):
            out[key] = [float(np.median(v)), *map(float, np.percentile(v, [2.5, 97.5]))]
    met = [d["spec_after"] >= 0.80 and d["sens_after"] >= 0.85 for d in ok]
    out["targets_met"] = float(np.mean(met))
    return out


def ceiling(table: pd.DataFrame, sens: float) -> float:
    """Specificity at ``sens`` on all of a site's slices: what its ranking allows at best."""
    y, p = table["y"].to_numpy(), table["p_model"].to_numpy()
    thr = threshold_for_sensitivity(p[y == 1], sens)
    return float((p[y == 0] < thr).mean())


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if isinstance(v, list):
        return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", action="append", required=True, metavar="SOURCE=CHECKPOINT")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10, 20])
    ap.add_argument("--repeats", type=int, default=100)
    goal = ap.add_mutually_exclusive_group()
    goal.add_argument("--target-sensitivity", type=float)
    goal.add_argument("--target-specificity", type=float)
    ap.add_argument("--min-patients", type=int, default=12)
    ap.add_argument("--slab", type=int, default=10)
    ap.add_argument("--prior-strength", type=float, default=PRIOR)
    ap.add_argument("--kind", default="auto", choices=["auto", "platt", "temperature", "none"])
    ap.add_argument("--scan-len", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    target = Target(specificity=args.target_specificity, sensitivity=args.target_sensitivity)
    rows = []
    for spec in args.site:
        source, ck_path = spec.split("=", 1)
        cache_file = args.out / f"{source}-outputs.csv"
        if cache_file.exists():
            table = pd.read_csv(cache_file, dtype={"patient": str, "group": str})
        else:
            path = checkpoint.resolve(ck_path)
            restored = checkpoint.restore(path)
            table = model_outputs(
                path, restored.meta, restored.model, data=[f"{args.data}/{source}"],
                split="test", device="cpu", progress=False,
            )  # fmt: skip
            table.to_csv(cache_file, index=False)
        table = units(table[truth_rows(table)], args.min_patients, args.slab)
        unit_kind = "patients" if (table["unit"] == table["group"]).all() else "slabs"
        rng = np.random.default_rng(0)
        for n in args.sizes:
            draws = [
                one_draw(table, n, target, args.scan_len, rng, args.prior_strength, args.kind)
                for _ in range(args.repeats)
            ]
            s = summarise(draws)
            rows.append(
                {
                    "site": source,
                    "units": f"{table['unit'].nunique()} {unit_kind}",
                    "n_calibration": n,
                    "target": target.describe(),
                    "prior_strength": args.prior_strength,
                    "kind": args.kind,
                    "ceiling_spec": ceiling(table, 0.85),
                    **s,
                }
            )
            print(json.dumps(rows[-1]))
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    cols = [
        ("site", "site"),
        ("units", "units"),
        ("n_calibration", "n cal"),
        ("target", "target"),
        ("kind", "kind"),
        ("refused", "refused"),
        ("spec_before", "spec before"),
        ("sens_before", "sens before"),
        ("spec_after", "spec after"),
        ("sens_after", "sens after"),
        ("targets_met", "spec>=.80 & sens>=.85"),
        ("ece_before", "ECE before"),
        ("ece_after", "ECE after"),
        ("scan_spec_before", "pseudo-scan spec before"),
        ("scan_spec_after", "pseudo-scan spec after"),
        ("scan_sens_before", "pseudo-scan sens before"),
        ("scan_sens_after", "pseudo-scan sens after"),
        ("ceiling_spec", "spec at sens .85, all slices"),
    ]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
