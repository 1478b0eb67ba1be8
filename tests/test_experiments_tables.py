"""experiments/tables.py: results.csv, paired_tests.csv and results.md from finished runs (the
run folders are written by hand here; test_experiments_run.py makes them by training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import tiny_base, write_yaml
from scipy import stats

from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.experiments.plan import plan
from lungmtl.experiments.spec import load_experiment
from lungmtl.experiments.tables import collect, headline_tests, summarise

DICE = {  # (variant, seed) -> per-slice Dice of 4 slices (NaN: no mask)
    ("base", 0): [0.6, 0.7, 0.5, np.nan],
    ("base", 1): [0.62, 0.66, 0.55, np.nan],
    ("segonly", 0): [0.7, 0.75, 0.6, np.nan],
    ("segonly", 1): [0.72, 0.8, 0.58, np.nan],
}
RIGHT = [True, False, True, True]
SUMMARY = {  # (variant, seed) -> metrics.json figures
    ("base", 0): {"dice_mean": 0.8, "mse": 0.01, "ssim": 0.9, "accuracy": 0.75},
    ("base", 1): {"dice_mean": 0.9, "mse": 0.02, "ssim": 0.95, "accuracy": 0.5},
    ("segonly", 0): {"dice_mean": 0.7, "mse": 0.03, "ssim": 0.8, "accuracy": 0.25},
    ("segonly", 1): {"dice_mean": 0.75, "mse": 0.04, "ssim": 0.85, "accuracy": 0.25},
}


@pytest.fixture
def finished(tmp_path):
    """An experiment of two variants x two seeds whose runs were all evaluated: ``segonly``
    trains no classifier (cls_weight 0)."""
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=4, size=32)
    base = tiny_base(tmp_path / "base.yaml", [data], tmp_path / "cache")
    spec = write_yaml(
        tmp_path / "e.yaml",
        base=base,
        runs=[{"name": "base"}, {"name": "segonly", "set": {"loss.cls_weight": 0}}],
        seeds=[0, 1],
        baseline="base",
    )
    exp = load_experiment(spec)
    runs = plan(exp, tmp_path / "out")
    for r in runs:
        ev = r.run_dir / "eval"
        ev.mkdir(parents=True)
        m = {"n_slices": 4, "data": "run split: test", **SUMMARY[(r.variant, r.seed)]}
        m["per_source"] = {"src": dict(m)}
        (ev / "metrics.json").write_text(json.dumps(m))
        pd.DataFrame(
            {
                "image": [f"/data/src/p{i // 2}/img.nii.gz" for i in range(4)],
                "index": range(4),
                "source": "src",
                "patient": [f"p{i // 2}" for i in range(4)],
                "dice": DICE[(r.variant, r.seed)],
                "correct": RIGHT if r.variant == "base" else [False, True, False, True],
            }
        ).to_csv(ev / "predictions.csv", index=False)
    return exp, runs, tmp_path / "out"


def test_collect_blanks_the_metrics_of_an_untrained_head(finished):
    _, runs, _ = finished
    per_run, per_source = collect(runs)
    assert list(per_run["run"]) == ["base-seed0", "base-seed1", "segonly-seed0", "segonly-seed1"]
    assert per_run["accuracy"].tolist()[:2] == [0.75, 0.5]
    assert per_run["accuracy"].iloc[2:].isna().all()  # segonly trains no classifier
    assert per_run["dice_mean"].tolist() == [0.8, 0.9, 0.7, 0.75]
    assert set(per_source["source"]) == {"src"} and len(per_source) == 4


def test_summarise_writes_mean_std_and_pooled_tests(finished):
    exp, runs, out = finished
    results = summarise(exp, runs, out).set_index("variant")
    assert results.loc["base", "dice_mean_mean"] == pytest.approx(0.85)
    assert results.loc["base", "dice_mean_std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert np.isnan(results.loc["segonly", "accuracy_mean"])
    # pooled over seeds: the Dice test of both seeds' slices with a mask, as scipy computes it
    a = DICE[("segonly", 0)][:3] + DICE[("segonly", 1)][:3]
    b = DICE[("base", 0)][:3] + DICE[("base", 1)][:3]
    p = stats.ttest_rel(a, b).pvalue
    assert results.loc["segonly", "vs_baseline_dice_p"] == pytest.approx(p)
    assert results.loc["segonly", "vs_baseline_n_slices"] == 8
    assert pd.isna(results.loc["segonly", "vs_baseline_correct_p"])  # untrained classifier
    assert pd.isna(results.loc["base", "vs_baseline_dice_p"])  # the baseline itself
    tests = pd.read_csv(out / "paired_tests.csv")
    assert tests["seeds"].astype(str).tolist() == ["0", "1", "pooled"]
    md = (out / "results.md").read_text()
    # the registry's digits: Dice in percent with 2 decimals, MSE with 4, SSIM with 3
    assert "| base | 2 | 4 | n/a | 0.0150 ± 0.0071 | n/a | 0.925 ± 0.035 | 85.00 ± 7.07 |" in md
    assert "| segonly | 2 | 4 | n/a | n/a | n/a | n/a | n/a | n/a |" in md  # Table 4
    assert "| base | 2 | 4 | 62.50 ± 17.68 | n/a | n/a | n/a | n/a | n/a |" in md
    assert "| segonly | src | 2 | 4 | n/a | n/a | 72.50 ± 3.54 | n/a |" in md  # per source
    dice_row = next(ln for ln in md.splitlines() if ln.startswith("| segonly | pooled | 6 |"))
    assert f"| {p:.4f} |" in dice_row and dice_row.endswith("| yes |")


def test_headline_tests_prefer_the_pooled_test():
    rows = [
        {"variant": "a", "held_out": "", "evaluation": "eval", "seeds": "0"},
        {"variant": "a", "held_out": "", "evaluation": "eval", "seeds": "1"},
        {"variant": "a", "held_out": "", "evaluation": "eval", "seeds": "pooled"},
        {"variant": "b", "held_out": "", "evaluation": "eval", "seeds": "0"},
    ]
    shown = headline_tests(pd.DataFrame(rows))
    assert list(zip(shown["variant"], shown["seeds"], strict=True)) == [
        ("a", "pooled"),
        ("b", "0"),
    ]


def test_runs_that_cannot_be_paired_are_reported_not_raised(finished):
    exp, runs, out = finished
    f = runs[2].run_dir / "eval" / "predictions.csv"  # segonly-seed0 lost a slice
    pd.read_csv(f).iloc[:-1].to_csv(f, index=False)
    summarise(exp, runs, out)
    tests = pd.read_csv(out / "paired_tests.csv", keep_default_na=False)
    assert tests.set_index("seeds").loc["0", "error"] == (
        "the evaluations do not cover the same slices"
    )
    assert (
        "| segonly | pooled | the evaluations do not cover the same slices |"
        in (out / "results.md").read_text()
    )


def test_nothing_finished_yet(finished, tmp_path):
    exp, runs, _ = finished
    for r in runs:
        (r.run_dir / "eval" / "metrics.json").unlink()
    assert summarise(exp, runs, tmp_path / "empty").empty
    assert "No finished runs yet." in (tmp_path / "empty" / "results.md").read_text()


def test_per_scan_figures_reach_the_tables(finished):
    """metrics.json ``per_volume`` (what leave-one-source-out selection reads) is tabulated."""
    exp, runs, out = finished
    summarise(exp, runs, out)
    assert "Per scan" not in (out / "results.md").read_text()  # no per_volume block yet
    for r, dice in zip(runs, (0.5, 0.7, 0.4, 0.6), strict=True):
        f = r.run_dir / "eval" / "metrics.json"
        m = json.loads(f.read_text())
        m["per_volume"] = {"n_volumes": 3, "dice_mean": dice, "lung_pct_mae": 2.0 * dice}
        f.write_text(json.dumps(m))
    per_run, _ = collect(runs)
    assert per_run["scan_dice"].tolist() == [0.5, 0.7, 0.4, 0.6]
    assert per_run["scan_dice"].dtype == float and per_run["n_scans"].tolist() == [3] * 4
    summarise(exp, runs, out)
    md = (out / "results.md").read_text()
    assert "## Per scan" in md
    assert "| base | 2 | 4 | 3 ± 0 | 60.00 ± 14.14 | n/a | 1.20 ± 0.28 | n/a | n/a |" in md
