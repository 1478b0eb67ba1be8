"""Per-volume scores (lungmtl.evaluation.volumes) on hand-made volumes, and in evaluate()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lungmtl.evaluation.volumes import (
    MIN_BURDEN_PCT,
    per_volume_block,
    slice_order,
    summarize,
    surface_dice,
    volume_dice,
    volume_error,
)
from lungmtl.presentation import burden_scatter_png, volume_section


def cube(offset: int = 0, axis: int = 2, shape=(12, 24, 24)) -> np.ndarray:
    """A 6x10x10 box, shifted by ``offset`` voxels along ``axis``."""
    v = np.zeros(shape, bool)
    v[3:9, 5:15, 5:15] = True
    return np.roll(v, offset, axis=axis)


def test_dice_of_offset_cubes_is_the_overlap_by_hand():
    # 6x10x10 boxes, 3 voxels apart along x: overlap 6x10x7, Dice 2*420 / (600 + 600) = 0.7
    assert volume_dice(cube(3), cube()) == pytest.approx(0.7)
    assert volume_dice(cube(10), cube()) == 0.0  # side by side, no overlap
    assert volume_dice(cube(), cube()) == 1.0


def test_identical_volumes_score_one_and_empty_cases_follow_the_rules():
    assert surface_dice(cube(), cube(), tolerance=0) == pytest.approx(1.0)
    empty = np.zeros_like(cube())
    assert volume_dice(empty, empty) == 1.0 and surface_dice(empty, empty) == 1.0
    assert volume_dice(cube(), empty) == 0.0 and surface_dice(cube(), empty) == 0.0
    assert volume_dice(empty, cube()) == 0.0 and surface_dice(empty, cube()) == 0.0


def test_nsd_counts_boundary_within_the_tolerance():
    """A one-voxel-thick 10x10 sheet (every voxel is boundary) moved 5 columns in-plane: on
    each side 50 voxels overlap (distance 0) and 10 lie at each distance 1..5; within 2 px
    that is 50 + 10 + 10 of 100, NSD 0.7; within 5 px all of them; within 0.5 px only 50."""
    t = np.zeros((5, 24, 24), bool)
    t[2, 5:15, 5:15] = True
    p = np.roll(t, 5, axis=2)
    assert surface_dice(p, t, tolerance=2) == pytest.approx(0.7)
    assert surface_dice(p, t, tolerance=5) == pytest.approx(1.0)
    assert surface_dice(p, t, tolerance=0.5) == pytest.approx(0.5)
    # a whole cube moved beyond the tolerance: below 1, and less so with a larger tolerance
    far = surface_dice(cube(4), cube(), tolerance=1)
    assert 0 < far < surface_dice(cube(4), cube(), tolerance=3) < 1


def test_volume_error_of_a_prediction_twice_as_large():
    t = np.zeros((4, 10, 10), bool)
    t[:, 2:4, 2:7] = True  # 40 voxels of 400
    p = t.copy()
    p[:, 4:6, 2:7] = True  # 80 voxels
    lung = np.zeros_like(t)
    lung[:, :, :5] = True  # 200 lung voxels; infection partly outside it still counts
    e = volume_error(p, t, lung)
    assert e["relative_error"] == pytest.approx(1.0)  # +100 %
    assert (e["true_voxels"], e["pred_voxels"], e["abs_error"]) == (40, 80, 40)
    assert e["true_share"] == pytest.approx(0.1) and e["pred_share"] == pytest.approx(0.2)
    assert e["true_lung_pct"] == pytest.approx(20.0) and e["pred_lung_pct"] == pytest.approx(40.0)
    none = volume_error(p, np.zeros_like(t), np.zeros_like(t))
    assert none["relative_error"] is None and none["true_lung_pct"] is None


def test_per_volume_block_stacks_patients_in_slice_order_and_skips_short_ones():
    """Patient a's slices arrive shuffled: stacked by the slice column, its prediction (the
    truth shifted 3 slices along z) scores NSD < 1; stacked in row order it would differ. Patient b
    has 2 masked slices, not a volume; patient c's unmasked slice is left out."""
    truth = cube(shape=(12, 24, 24))
    pred = np.roll(truth, 3, axis=0)
    order = np.random.default_rng(0).permutation(12)
    n_c = 4
    masks = np.concatenate([truth[order], truth[:2], truth[3 : 3 + n_c]])
    preds = np.concatenate([pred[order], truth[:2], truth[3 : 3 + n_c]])
    frame = pd.DataFrame(
        {
            "source": ["s"] * (12 + 2 + n_c),
            "patient": ["a"] * 12 + ["b"] * 2 + ["c"] * n_c,
            "slice": [str(z) for z in order] + ["0", "1"] + ["0", "1", "2", "3"],
            "has_mask": [True] * 14 + [True] * (n_c - 1) + [False],
        }
    )
    frame["pos"] = np.arange(len(frame))
    lungs = np.ones_like(masks)
    block = per_volume_block(frame, preds, masks, lungs, tolerance=1, n_boot=50)
    assert block["n_volumes"] == 2 and block["tolerance_px"] == 1.0
    rows = {r["patient"]: r for r in block["volumes"]}
    assert set(rows) == {"a", "c"} and rows["c"]["n_slices"] == n_c - 1
    # z shift of 3 slices of a 6-slice box: overlap 3/6
    assert rows["a"]["dice"] == pytest.approx(0.5)
    assert rows["a"]["nsd"] == pytest.approx(surface_dice(pred, truth, 1))
    assert rows["a"]["nsd"] != pytest.approx(surface_dice(pred[order], truth[order], 1))
    assert rows["a"]["nsd"] < 1 and rows["c"]["nsd"] == 1.0 and rows["c"]["dice"] == 1.0
    assert block["dice_mean"] == pytest.approx((0.5 + 1) / 2)
    lo, hi = block["dice_ci"]
    assert 0.5 - 1e-9 <= lo <= hi <= 1 + 1e-9
    assert block["relative_volume_mae"] == pytest.approx(0.0)  # same voxel count
    assert block["per_source"]["s"]["n_volumes"] == 2
    assert slice_order(frame.iloc[:12]).tolist() == np.argsort(order).tolist()


def burden_row(true: int, pred: int, lung: int | None = 1000, source: str = "s") -> dict:
    """A per-volume row of known voxel counts in a 10000-voxel volume (Dice/NSD dummies)."""
    flat = np.zeros(10000, bool)
    t, p, lung_mask = flat.copy(), flat.copy(), flat.copy()
    t[:true], p[:pred] = True, True
    lung_mask[: lung or 0] = True
    e = volume_error(p, t, lung_mask if lung else None, voxel_ml=0.5)
    return {"source": source, "patient": f"{true}-{pred}", "dice": 1.0, "nsd": 1.0, **e}


def test_a_near_healthy_scan_stays_out_of_the_relative_error_only():
    """6 true voxels of 1000 lung (0.6 %) enter; 4 of 1000 (0.4 %, +42700 %) do not; the
    healthy scan has no relative error at all. Dice/NSD and lung % keep every volume."""
    rows = [
        burden_row(100, 150),  # +50 %
        burden_row(200, 100),  # -50 %
        burden_row(6, 9),  # 0.6 % of lung: +50 %
        burden_row(4, 1712),  # 0.4 % of lung: left out
        burden_row(0, 0),
    ]
    s = summarize(rows, n_boot=20)
    assert s["n_volumes"] == 5 and s["n_relative"] == 3
    assert s["relative_min_lung_pct"] == MIN_BURDEN_PCT == 0.5
    assert s["relative_volume_mae"] == pytest.approx(0.5)
    assert s["relative_volume_bias"] == pytest.approx((0.5 - 0.5 + 0.5) / 3)
    assert "of the lung" in s["relative_rule"] and "voxels" not in s["relative_rule"]
    # lung %: pred - true = 5, -10, 0.3, 170.8, 0 points
    assert s["lung_pct_mae"] == pytest.approx((5 + 10 + 0.3 + 170.8 + 0) / 5)
    assert s["lung_pct_bias"] == pytest.approx((5 - 10 + 0.3 + 170.8 + 0) / 5)
    # without a lung mask the share of the volume's voxels decides: 60 of 10000 is 0.6 %
    s = summarize([burden_row(60, 90, lung=None), burden_row(40, 400, lung=None)], n_boot=20)
    assert s["n_relative"] == 1 and s["relative_volume_mae"] == pytest.approx(0.5)
    assert "voxels (no lung mask known)" in s["relative_rule"] and s["lung_pct_mae"] is None


def test_limits_of_agreement_and_correlation_by_hand():
    """True 10, 20, 30 % of lung, predicted 11, 22, 33: differences 1, 2, 3, so bias 2, sd 1,
    limits of agreement 2 ± 1.96 = [0.04, 3.96]; pred = 1.1 x true, so Pearson and Spearman 1.
    mL at 0.5 mL a voxel: |1 x 10|, |2 x 10|, |3 x 10| voxels of difference x 0.5 = 5, 10, 15."""
    rows = [burden_row(10 * k, 11 * k) for k in (10, 20, 30)]
    s = summarize(rows, n_boot=20)
    assert s["lung_pct_bias"] == pytest.approx(2.0)
    assert s["lung_pct_loa"] == pytest.approx([0.04, 3.96])
    assert s["lung_pct_r"] == pytest.approx(1.0) and s["lung_pct_spearman"] == pytest.approx(1.0)
    assert s["lung_pct_mae"] == pytest.approx(2.0)
    assert s["ml_mae"] == pytest.approx(10.0)
    # Pearson by hand on a non-linear case: true 1, 2, 3, pred 1, 3, 2 gives r = 0.5
    r = summarize([burden_row(10, 10), burden_row(20, 30), burden_row(30, 20)], n_boot=20)
    assert r["lung_pct_r"] == pytest.approx(0.5)
    # too few volumes or a constant side: undefined
    two = summarize(rows[:2], n_boot=20)
    assert two["lung_pct_loa"] is not None and two["lung_pct_r"] is None
    assert summarize(rows[:1], n_boot=20)["lung_pct_loa"] is None
    flat = summarize([burden_row(100, 50), burden_row(200, 50), burden_row(300, 50)], n_boot=20)
    assert flat["lung_pct_r"] is None and flat["lung_pct_spearman"] is None


def test_volumes_in_ml_only_with_a_known_voxel_volume():
    t = np.zeros((2, 10, 10), bool)
    t[0, :4] = True  # 40 voxels
    p = np.zeros_like(t)
    p[1, :6] = True  # 60 voxels
    e = volume_error(p, t, voxel_ml=0.25)
    assert e["true_ml"] == pytest.approx(10.0) and e["pred_ml"] == pytest.approx(15.0)
    assert "true_ml" not in volume_error(p, t)
    assert summarize([{**e, "dice": 0.0, "nsd": 0.0}], n_boot=10)["ml_mae"] == pytest.approx(5.0)
    frame = pd.DataFrame(
        {
            "source": "s",
            "patient": "a",
            "slice": ["0", "1", "2"],
            "has_mask": True,
            "pos": [0, 1, 2],
        }
    )
    vol = np.zeros((3, 8, 8), bool)
    vol[:, 2:4, 2:4] = True
    block = per_volume_block(frame, vol, vol, None, n_boot=10)
    assert block["ml"] == "unknown spacing" and block["voxel_ml"] is None
    assert block["ml_mae"] is None and "true_ml" not in block["volumes"][0]
    block = per_volume_block(frame, vol, vol, None, n_boot=10, voxel_ml=0.002)
    assert block["volumes"][0]["true_ml"] == pytest.approx(12 * 0.002)
    assert block["ml_mae"] == pytest.approx(0.0) and "unknown" not in block["ml"]


def test_burden_scatter_writes_a_png_and_the_section_states_the_agreement(tmp_path):
    rows = [burden_row(10 * k, 11 * k, source=src) for k, src in ((10, "a"), (20, "b"), (30, "a"))]
    path = burden_scatter_png(rows, tmp_path / "burden.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    pv = {"rule": "r", "tolerance_px": 2.0, "ml": "unknown spacing", **summarize(rows, 10)}
    pv["volumes"] = rows
    text = volume_section(pv)
    assert "Pearson r 1.000" in text and "bias (pred - true) 2.00 pp" in text
    assert "[0.04, 3.96] pp" in text and "over 3 scan(s)" in text
    assert "unknown spacing" not in text  # rows here carry mL


@pytest.mark.slow
def test_evaluate_writes_the_per_volume_block(tmp_path):
    from lungmtl.config import load_config
    from lungmtl.data.phantom import write_phantom_dataset
    from lungmtl.evaluation import evaluate
    from lungmtl.training import fit

    data = write_phantom_dataset(tmp_path / "d", n_patients=6, n_slices=4, size=64, seed=1)
    cfg = load_config(
        overrides=[
            f"data.sources={[str(data)]}",
            f"data.cache_dir={tmp_path / 'c'}",
            "preprocess.size=64",
            "model.width_mult=0.125",
            "model.cls_hidden=[32, 16]",
            "train.batch_size=8",
            "train.epochs=1",
        ]
    )
    fit(cfg, tmp_path / "run", progress=False)
    evaluate(tmp_path / "run", tmp_path / "e", data=[str(data)], progress=False, n_boot=10)
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    pv = m["per_volume"]
    assert pv["n_volumes"] == 6 and pv["tolerance_px"] == 2.0
    assert len(pv["volumes"]) == 6 and {r["n_slices"] for r in pv["volumes"]} == {4}
    for r in pv["volumes"]:
        assert 0 <= r["dice"] <= 1 and 0 <= r["nsd"] <= 1
        assert r["true_lung_pct"] is not None
    assert pv["dice_ci"] is not None and pv["nsd_mean"] is not None
    # each volume's truth is its patient's slices: the infected share is their mean lesion share
    pred = pd.read_csv(tmp_path / "e" / "predictions.csv", dtype={"patient": str})
    share = pred.groupby("patient")["lesion_share"].mean()
    for r in pv["volumes"]:
        assert r["true_share"] == pytest.approx(share[r["patient"]])
        if r["true_voxels"] == 0 and r["pred_voxels"] == 0:
            assert r["dice"] == 1.0 and r["nsd"] == 1.0 and r["relative_error"] is None
    assert pv["n_empty_truth"] == sum(r["true_voxels"] == 0 for r in pv["volumes"]) > 0
    report = (tmp_path / "e" / "report.md").read_text()
    assert "## Per volume" in report and f"| {data.name}/phantom-00 | 4 |" in report
    assert pv["ml"] == "unknown spacing" and pv["n_relative"] <= pv["n_volumes"]
    assert "limits of agreement" in report and "![burden" in report
    assert (tmp_path / "e" / "burden.png").stat().st_size > 0
