"""Calibration: measures, the Platt fit, operating points, refusals, the site file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lungmtl.calibration import Calibration, calibration_block
from lungmtl.calibration.fit import fit_platt, fit_site, truth_rows
from lungmtl.calibration.measures import expected_calibration_error
from lungmtl.calibration.model import sigmoid
from lungmtl.calibration.thresholds import (
    Target,
    run_statistic,
    threshold_for_sensitivity,
    threshold_for_specificity,
)
from lungmtl.errors import InputError
from lungmtl.scan_rule import ScanRule


def shifted_site(n_patients=60, n_slices=20, shift=-2.0, seed=0):
    """A site where the model over-calls: the truth is sigmoid(logit(P_model) + shift)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.5, (n_patients, n_slices))
    y = (rng.random(z.shape) < sigmoid(z + shift)).astype(int)
    return pd.DataFrame(
        {
            "group": np.repeat([f"p{k}" for k in range(n_patients)], n_slices),
            "slice": np.tile(np.arange(n_slices), n_patients),
            "y": y.ravel(),
            "label_level": "slice",
            "p_model": sigmoid(z).ravel(),
        }
    )


def test_ece_and_brier_have_known_values_and_match_torchmetrics():
    p = np.full(100, 0.8)
    y = np.r_[np.ones(80), np.zeros(20)]
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    assert expected_calibration_error(p, np.zeros(100)) == pytest.approx(0.8)
    block = calibration_block(p, np.zeros(100))
    assert block["brier"] == pytest.approx(0.64) and block["n_bins"] == 10
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import binary_calibration_error

    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)
    ref = binary_calibration_error(torch.tensor(p), torch.tensor(y), n_bins=10, norm="l1")
    assert expected_calibration_error(p, y) == pytest.approx(float(ref), abs=1e-6)


def test_platt_fit_recovers_a_shifted_logistic_and_temperature_keeps_the_intercept():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(z.size) < sigmoid(2.0 * z - 1.0)).astype(int)
    a, b = fit_platt(sigmoid(z), y)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)
    a, b = fit_platt(sigmoid(z), y, intercept=False)
    assert b == 0.0 and 1.0 < a < 2.5


def test_the_prior_holds_a_tiny_fit_near_the_calibration_the_model_has():
    # Four perfectly separated slices: maximum likelihood alone would run off to infinity.
    a, b = fit_platt([0.2, 0.3, 0.7, 0.8], [0, 0, 1, 1], prior=(1.0, 0.0))
    assert 1.0 <= a < 4.0 and abs(b) < 1.0


def test_thresholds_meet_their_targets_and_refuse_too_few_slices():
    healthy = np.linspace(0.0, 0.99, 100)
    t = threshold_for_specificity(healthy, 0.9)
    assert (healthy < t).mean() >= 0.9 and (healthy < t).mean() < 0.92
    infected = np.linspace(0.01, 1.0, 100)
    t = threshold_for_sensitivity(infected, 0.85)
    assert (infected >= t).mean() >= 0.85 and (infected >= t).mean() < 0.87
    with pytest.raises(InputError, match="need at least 20"):
        threshold_for_specificity(healthy[:10], 0.95)
    with pytest.raises(InputError, match="infected slice"):
        threshold_for_sensitivity(infected[:3], 0.9)


def test_run_statistic_is_the_highest_threshold_with_a_run():
    p = [0.1, 0.95, 0.2, 0.8, 0.9, 0.7]
    assert run_statistic(p, 1) == pytest.approx(0.95)
    assert run_statistic(p, 2) == pytest.approx(0.8)
    assert run_statistic(p, 3) == pytest.approx(0.7)
    rule = ScanRule(slice_threshold=0.8, min_run=2)
    assert rule.decide(np.array(p), None)["verdict"] == "infected"
    assert ScanRule(slice_threshold=0.81, min_run=2).decide(np.array(p), None)["verdict"] == (
        "healthy"
    )


def test_a_site_fit_undoes_the_shift_and_meets_its_target_on_fresh_patients():
    site = shifted_site(seed=0)
    fresh = shifted_site(seed=1)
    cal = fit_site(
        site,
        prior=Calibration(),
        base_rule=ScanRule(slice_threshold=0.9, min_run=2),
        target=Target(specificity=0.9),
        n_boot=50,
    )
    assert cal.slope == pytest.approx(1.0, abs=0.15)
    assert cal.intercept == pytest.approx(-2.0, abs=0.3)
    before = expected_calibration_error(fresh["p_model"], fresh["y"])
    after = expected_calibration_error(cal.apply(fresh["p_model"]), fresh["y"])
    assert before > 0.15 and after < 0.04
    healthy = cal.apply(fresh.loc[fresh["y"] == 0, "p_model"])
    assert (healthy < cal.threshold).mean() == pytest.approx(0.9, abs=0.03)
    ci = cal.fitted["ci95"]
    assert ci["slope"][0] <= cal.slope <= ci["slope"][1] and ci["n_boot"] > 40
    assert ci["threshold"][0] <= cal.threshold <= ci["threshold"][1]


def test_healthy_scans_set_the_scan_rule_above_their_highest_run():
    site = shifted_site(n_patients=30, seed=3)
    healthy = site.groupby("group")["y"].transform("max") == 0
    assert not healthy.any()  # make two patients healthy scans with a few high slices
    for g in ("p0", "p1"):
        site.loc[site["group"] == g, "y"] = 0
    cal = fit_site(site, prior=Calibration(), base_rule=ScanRule(0.9, 2), n_boot=0)
    for g in ("p0", "p1"):
        p = cal.apply(site.loc[site["group"] == g, "p_model"])
        assert cal.scan_rule.decide(p, None)["verdict"] == "healthy"
    assert cal.fitted["n_scans_healthy"] == 2
    assert cal.scan_rule.min_run == 2


def test_saturated_healthy_scans_make_the_note_say_so_and_targets_it_cannot_reach_refused():
    site = shifted_site(n_patients=12, seed=6)
    for g in ("p0", "p1"):
        site.loc[site["group"] == g, "y"] = 0
    site.loc[site["group"] == "p0", "p_model"] = 1.0  # a healthy scan the model calls certain
    cal = fit_site(site, prior=Calibration(), base_rule=ScanRule(0.9, 2), n_boot=0)
    verdicts = [
        cal.scan_rule.decide(cal.apply(site.loc[site["group"] == g, "p_model"]), None)["verdict"]
        for g in ("p0", "p1")
    ]
    called = verdicts.count("healthy")
    assert cal.fitted["scan_rule"].startswith(f"fitted: {called} of 2 healthy scan(s)")
    healthy = np.r_[np.ones(30), np.linspace(0, 0.5, 10)]
    with pytest.raises(InputError, match="have P = 1"):
        threshold_for_specificity(healthy, 0.5)


def test_too_little_data_is_refused_naming_what_is_missing():
    site = shifted_site(n_patients=3, n_slices=4)
    site["y"] = [1] * 4 + [0] * 4 + [1] * 4  # one healthy patient
    with pytest.raises(InputError, match=r"1 healthy patients \(need 2\)"):
        fit_site(site, prior=Calibration(), base_rule=ScanRule(), where="site data")
    with pytest.raises(InputError, match="give a target specificity or sensitivity, not both"):
        Target(specificity=0.9, sensitivity=0.9)
    with pytest.raises(InputError, match=r"\[0.5, 1\)"):
        Target(specificity=1.0)


def test_study_labels_count_for_a_slice_only_where_the_study_has_one_slice():
    t = pd.DataFrame(
        {
            "group": ["a", "a", "b", "c", "c"],
            "y": [1, 1, 1, 0, 0],
            "label_level": ["study"] * 5,
        }
    )
    assert truth_rows(t).tolist() == [False, False, True, True, True]


def test_site_file_round_trips_and_bad_files_are_refused_by_name(tmp_path):
    cal = Calibration(
        slope=1.3,
        intercept=-0.7,
        threshold=0.62,
        scan_rule=ScanRule(0.91, 2),
        origin="site",
        model={"name": "m", "sha256": "ab" * 32},
    )
    path = cal.save(tmp_path / "site.json")
    back = Calibration.load(path)
    assert back.to_dict() == cal.to_dict() and back.path == str(path)
    p = np.array([0.1, 0.5, 0.9])
    assert np.allclose(back.invert(back.apply(p)), p)
    with pytest.raises(InputError, match="not for 'other'"):
        back.check_model("cd" * 32, "other")
    back.check_model("ab" * 32, "m")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json.*unreadable"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps({**cal.to_dict(), "colour": 1}))
    with pytest.raises(InputError, match="unknown calibration key"):
        Calibration.load(tmp_path / "odd.json")
    (tmp_path / "neg.json").write_text(json.dumps({**cal.to_dict(), "slope": -1}))
    with pytest.raises(InputError, match="slope"):
        Calibration.load(tmp_path / "neg.json")
    with pytest.raises(InputError, match="no such calibration file"):
        Calibration.load(tmp_path / "missing.json")
    for name, d in {
        "empty": {},
        "no-sha": {**cal.to_dict(), "model": {"name": "m"}},
        "not-site": {**cal.to_dict(), "origin": "validation"},
        "odd-origin": {**cal.to_dict(), "origin": "elsewhere"},
        "model-text": {**cal.to_dict(), "model": "m"},
    }.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
        with pytest.raises(InputError, match=f"{name}.json"):
            Calibration.load(tmp_path / f"{name}.json")


@pytest.mark.parametrize(("slope", "intercept"), [(0.7, 0.5), (1.2280250410614577, 0.0), (3, -4)])
def test_a_moved_rule_gives_the_same_verdicts_on_the_model_p_at_its_edge(slope, intercept):
    """Slices just either side of the rule's threshold keep their verdict (the v1 temperature
    among the calibrations: its file stores the moved threshold unrounded)."""
    rule = ScanRule(slice_threshold=0.9, min_run=2)
    cal = Calibration(slope=slope, intercept=intercept)
    moved = cal.moved(rule)
    assert 0.0 < moved.slice_threshold < 1.0
    for p_edge in (0.9 - 1e-6, 0.9 + 1e-6, 0.9):
        p = np.array([0.1, p_edge, p_edge, 0.2])
        assert rule.decide(p, None)["verdict"] == moved.decide(cal.apply(p), None)["verdict"]


def test_tied_probabilities_still_meet_the_target():
    healthy = np.r_[np.full(50, 0.4), np.linspace(0.5, 0.9, 50)]
    t = threshold_for_specificity(healthy, 0.3)
    assert (healthy < t).mean() >= 0.3
    infected = np.r_[np.full(60, 0.7), np.linspace(0.1, 0.6, 40)]
    t = threshold_for_sensitivity(infected, 0.5)
    assert (infected >= t).mean() >= 0.5


def test_auto_keeps_a_calibrated_model_and_refits_a_shifted_one():
    from lungmtl.calibration.fit import choose_kind

    calibrated = shifted_site(shift=0.0, seed=4)
    kind, scores = choose_kind(calibrated, Calibration())
    assert kind in ("none", "temperature") and set(scores) == {"none", "temperature", "platt"}
    shifted = shifted_site(shift=-2.0, seed=4)
    kind, scores = choose_kind(shifted, Calibration())
    assert kind == "platt" and scores["platt"]["log_loss"] < scores["none"]["log_loss"]
    cal = fit_site(shifted, prior=Calibration(), base_rule=ScanRule(), n_boot=0)
    assert cal.fitted["kind"] == "platt" and cal.fitted["cross_validation"] == scores
    with pytest.raises(InputError, match="unknown calibration kind"):
        fit_site(shifted, prior=Calibration(), base_rule=ScanRule(), kind="isotonic")
