"""mask_rule: which slices keep their infection map (hard gate, none, evidence, soft)."""

from __future__ import annotations

import numpy as np
import pytest

from lungmtl.errors import InputError
from lungmtl.forward import SliceProbabilities
from lungmtl.mask_rule import MaskRule


def _pred():
    """Four slices: called infected; missed by the classifier with a large confident outline;
    missed with a small one; missed with a large faint one."""
    seg = np.zeros((4, 16, 16), np.float32)
    seg[0, :8, :8] = 0.9
    seg[1, :10, :10] = 0.95  # 100 px at 0.95
    seg[2, :3, :3] = 0.95  # 9 px
    seg[3, :10, :10] = 0.6  # 100 px, faint
    return SliceProbabilities(np.array([0.9, 0.1, 0.1, 0.1], np.float32), seg)


def test_hard_gate_drops_every_slice_the_classifier_misses():
    out = MaskRule("gate", 0.5).apply(_pred())
    assert out.seg_prob[0].max() == np.float32(0.9)
    assert out.seg_prob[1:].max() == 0


def test_evidence_keeps_large_confident_outlines_only():
    rule = MaskRule("evidence", 0.5, min_area=50, min_conf=0.8)
    assert rule.keep(_pred()).tolist() == [True, True, False, False]
    out = rule.apply(_pred())
    assert out.seg_prob[1].max() == np.float32(0.95) and out.seg_prob[2:].max() == 0
    # a lower confidence bar lets the faint outline through; a smaller area the small one
    assert MaskRule("evidence", 0.5, 50, 0.5).keep(_pred()).tolist() == [True, True, False, True]
    assert MaskRule("evidence", 0.5, 5, 0.8).keep(_pred()).tolist() == [True, True, True, False]


def test_none_and_soft():
    pred = _pred()
    assert MaskRule("none").apply(pred) is pred
    soft = MaskRule("soft").apply(pred)
    np.testing.assert_allclose(soft.seg_prob[1], pred.seg_prob[1] * 0.1, rtol=1e-6)
    assert (soft.seg_prob[1] >= 0.5).sum() == 0  # a missed slice's outline vanishes at 0.5


def test_checkpoint_rule_round_trip_and_v1_gate():
    rule = MaskRule("evidence", 0.4, 30, 0.7)
    assert MaskRule.of_checkpoint({"mask_rule": rule.to_dict()}) == rule
    assert MaskRule.of_checkpoint({"mask_gate": 0.5}) == MaskRule("gate", 0.5)
    assert MaskRule.of_checkpoint({}).kind == "none"
    assert "30 px" in rule.describe()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "maybe"}, "kind must be one of"),
        ({"gate": 1.5}, "gate must lie in"),
        ({"min_conf": -0.1}, "min_conf must lie in"),
        ({"min_area": 2.5}, "min_area must be an integer"),
        ({"min_area": True}, "min_area must be an integer"),
    ],
)
def test_nonsense_rules_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        MaskRule(**kwargs)
    with pytest.raises(InputError, match="unknown keys"):
        MaskRule.from_dict({"kind": "gate", "threshold": 0.5})
