"""The scan-level rule: run length, scan score and lung share all have to agree."""

import numpy as np
import pytest

from lungmtl.scan_rule import ScanRule, longest_run


def test_the_default_is_the_plain_run_rule():
    rule = ScanRule()
    p = np.array([0.1, 0.6, 0.7, 0.8, 0.1])
    assert rule.decide(p, lung_percent=0.01)["verdict"] == "infected"
    assert rule.decide(np.array([0.9, 0.1, 0.9, 0.1, 0.9]), None)["verdict"] == "healthy"


def test_scattered_false_positives_on_a_long_healthy_scan_are_not_a_verdict():
    # The failure seen on a healthy scan from another hospital: a few slices over 0.5, one short
    # run, under 1% of the lung: the plain rule calls it infected, the burden criterion not.
    p = np.full(300, 0.05)
    p[[40, 41, 42, 150, 220]] = [0.55, 0.6, 0.58, 0.7, 0.52]
    assert ScanRule().decide(p, 0.4)["verdict"] == "infected"
    strict = ScanRule(min_run=3, scan_threshold=0.8, min_lung_percent=1.0)
    out = strict.decide(p, 0.4)
    assert out["verdict"] == "healthy"
    assert out["scan_score"] == pytest.approx(np.mean([0.7, 0.6, 0.58]), abs=1e-4)
    assert strict.decide(np.where(p > 0.5, 0.95, p), 3.0)["verdict"] == "infected"


def test_breaks_and_short_scans():
    assert longest_run(np.ones(5, bool), np.array([0, 0, 1, 0, 0], bool)) == 3
    rule = ScanRule(min_run=5)
    assert rule.decide(np.array([0.9, 0.9]), None)["verdict"] == "infected"  # need <= length
    assert (
        rule.decide(np.ones(6) * 0.9, None, np.array([0, 0, 0, 1, 0, 0], bool))["verdict"]
        == "healthy"
    )


def test_invalid_rules_are_refused():
    for bad in ({"min_run": 0}, {"slice_threshold": 1.5}, {"min_lung_percent": -1}):
        with pytest.raises(ValueError):
            ScanRule(**bad)
    with pytest.raises(ValueError, match="valid"):
        ScanRule.from_dict({"min_runs": 3})
    assert ScanRule.from_dict(ScanRule(top_k=5).to_dict()) == ScanRule(top_k=5)
