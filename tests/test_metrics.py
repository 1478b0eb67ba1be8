"""Metrics: hand-worked values, empty/all-ones masks, undefined cases, cross-checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import structural_similarity
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_f1_score,
    binary_jaccard_index,
    binary_matthews_corrcoef,
    binary_specificity,
)

from lungmtl.errors import InputError
from lungmtl.metrics import (
    ClassificationAccumulator,
    SegmentationAccumulator,
    classification_metrics,
    dice,
    iou,
    mse,
    pixel_accuracy,
    psnr,
    ssim,
)

# 3x3 hand-worked pair: pred has 3 pixels, true has 2, they share 1.
PRED = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
TRUE = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=np.uint8)


def test_segmentation_hand_worked():
    # |X∩Y| = 1, |X| = 3, |Y| = 2 -> Dice = 2/5, IoU = 1/4.
    assert dice(PRED, TRUE) == pytest.approx(0.4)
    assert iou(PRED, TRUE) == pytest.approx(0.25)
    # Disagreeing pixels: (0,1), (1,1), (2,2) = 3 of 9.
    assert pixel_accuracy(PRED, TRUE) == pytest.approx(6 / 9)
    assert mse(PRED, TRUE) == pytest.approx(3 / 9)
    # PSNR = 20 log10(1 / sqrt(1/3)) = 10 log10(3).
    assert psnr(PRED, TRUE) == pytest.approx(10 * math.log10(3))
    assert psnr(PRED, TRUE, max_val=255.0) == pytest.approx(20 * math.log10(255 * math.sqrt(3)))


def test_probabilities_threshold_and_soft_mse():
    prob = np.array([[0.9, 0.5], [0.49, 0.0]])
    true = np.array([[1, 0], [1, 0]])
    # Threshold 0.5 (>=): predicted mask [[1,1],[0,0]] -> inter 1, |X| 2, |Y| 2 -> Dice 1/2.
    assert dice(prob, true) == pytest.approx(0.5)
    # MSE on the probabilities themselves: (0.01 + 0.25 + 0.2601 + 0) / 4.
    assert mse(prob, true) == pytest.approx((0.01 + 0.25 + 0.2601) / 4)


def test_empty_and_full_masks():
    z = np.zeros((8, 8), bool)
    o = np.ones((8, 8), bool)
    assert dice(z, z) == 1.0 and iou(z, z) == 1.0
    assert math.isnan(dice(z, z, empty=float("nan")))
    assert math.isnan(iou(z, z, empty=float("nan")))
    assert dice(o, z) == 0.0 and iou(z, o) == 0.0
    for a in (z, o):
        assert dice(a, a) == 1.0 and pixel_accuracy(a, a) == 1.0 and mse(a, a) == 0.0
        assert psnr(a, a) == math.inf
        assert ssim(a, a) == pytest.approx(1.0)
    assert pixel_accuracy(o, z) == 0.0 and mse(o, z) == 1.0 and psnr(o, z) == 0.0


def test_ssim_matches_skimage_and_small_images():
    rng = np.random.default_rng(0)
    p = rng.random((20, 24)) > 0.5
    t = rng.random((20, 24)) > 0.5
    ref = structural_similarity(p.astype(float), t.astype(float), data_range=1.0)
    assert ssim(p, t) == pytest.approx(ref)
    # 5x6 uses a 5x5 window instead of failing; 2x2 is too small to mean anything.
    small = rng.random((5, 6)) > 0.5
    assert -1.0 <= ssim(small, ~small) < ssim(small, small)
    with pytest.raises(InputError, match="too small"):
        ssim(np.zeros((2, 2)), np.zeros((2, 2)))


def test_dice_iou_match_torchmetrics():
    rng = np.random.default_rng(1)
    for _ in range(5):
        p = rng.random((16, 16)) > 0.6
        t = rng.random((16, 16)) > 0.4
        pt, tt = torch.from_numpy(p).long().flatten(), torch.from_numpy(t).long().flatten()
        # Dice on pixels is the F1 score; IoU is the Jaccard index.
        assert dice(p, t) == pytest.approx(binary_f1_score(pt, tt).item(), abs=1e-6)
        assert iou(p, t) == pytest.approx(binary_jaccard_index(pt, tt).item(), abs=1e-6)


def test_bad_segmentation_input():
    with pytest.raises(InputError, match="does not match"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="0/1"):
        dice(np.zeros((3, 3), int), np.full((3, 3), 2))


def test_torch_tensors_accepted():
    t = torch.from_numpy(TRUE.astype(np.float32)).requires_grad_(True)
    assert dice(torch.from_numpy(PRED), t) == pytest.approx(0.4)


def test_classification_hand_worked():
    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.6, 0.4, 0.7, 0.9]
    # Predicted [0,1,0,1,1]: tn 1, fp 1, fn 1, tp 2.
    m = classification_metrics(y, p)
    assert m["confusion"] == [[1, 1], [1, 2]]
    assert (m["n"], m["n_infected"], m["n_healthy"]) == (5, 3, 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # MCC = (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2) = 1/6.
    assert m["mcc"] == pytest.approx(1 / 6)
    # AUC: positive scores {.4,.7,.9} beat negatives {.1,.6} in 1 + 2 + 2 = 5 of 6 pairs.
    assert m["auc"] == pytest.approx(5 / 6)
    # The threshold is inclusive: p == 0.5 counts as infected.
    assert classification_metrics([1], [0.5])["confusion"] == [[0, 0], [0, 1]]
    assert classification_metrics(y, p, threshold=0.95)["sensitivity"] == 0.0


def test_classification_matches_sklearn_and_torchmetrics():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = classification_metrics(y, p, threshold=0.5)
    yp = (p >= 0.5).astype(int)
    yt, pt = torch.from_numpy(y), torch.from_numpy(p).float()
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["auc"] == pytest.approx(binary_auroc(pt, yt).item(), abs=1e-5)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, yp))
    assert m["mcc"] == pytest.approx(binary_matthews_corrcoef(pt, yt).item(), abs=1e-5)
    assert m["f1"] == pytest.approx(f1_score(y, yp))
    assert m["specificity"] == pytest.approx(binary_specificity(pt, yt).item(), abs=1e-6)
    assert m["accuracy"] == pytest.approx((yp == y).mean())


def test_single_class_and_undefined_values_are_none_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pos = classification_metrics([1, 1, 1], [0.9, 0.2, 0.8])
        neg = classification_metrics([0, 0], [0.1, 0.2])
        none_pred = classification_metrics([0, 1, 1], [0.1, 0.2, 0.3])
        empty = classification_metrics([], [])
    assert pos["auc"] is None and pos["specificity"] is None and pos["mcc"] is None
    assert pos["sensitivity"] == pytest.approx(2 / 3) and pos["precision"] == 1.0
    # No positives and none predicted: sensitivity, precision, F1, MCC undefined; accuracy 1.
    assert neg["accuracy"] == 1.0 and neg["specificity"] == 1.0
    assert neg["sensitivity"] is None and neg["precision"] is None
    assert neg["f1"] is None and neg["auc"] is None and neg["mcc"] is None
    # Positives exist but none predicted: precision undefined, F1 = 0 (2tp/(2tp+fp+fn) = 0/2).
    assert none_pred["precision"] is None and none_pred["f1"] == 0.0 and none_pred["mcc"] is None
    assert none_pred["auc"] == 1.0
    assert empty["n"] == 0 and empty["accuracy"] is None
    assert empty["confusion"] == [[0, 0], [0, 0]]


def test_bad_classification_input():
    with pytest.raises(InputError, match="labels must be"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="2 labels but 3"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="NaN"):
        classification_metrics([0, 1], [0.1, float("nan")])


def test_classification_accumulator_equals_one_shot():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    acc = ClassificationAccumulator()
    for i in range(0, 50, 16):
        acc.update(torch.from_numpy(y[i : i + 16]), p[i : i + 16])
    ya, pa = acc.arrays()
    np.testing.assert_array_equal(ya, y)
    np.testing.assert_allclose(pa, p)
    assert acc.compute() == classification_metrics(y, p)
    assert ClassificationAccumulator().compute()["n"] == 0


def test_segmentation_accumulator():
    rng = np.random.default_rng(4)
    prob = rng.random((6, 1, 12, 10)).astype(np.float32)
    true = rng.random((6, 12, 10)) > 0.7
    true[2] = False  # one healthy slice
    has = np.array([True, True, True, True, False, True])
    acc = SegmentationAccumulator()
    acc.update(prob[:3], true[:3], has[:3])
    acc.update(torch.from_numpy(prob[3:]), true[3:, None], torch.from_numpy(has[3:]))
    per = acc.per_slice()
    kept = np.flatnonzero(has)
    assert len(per["dice"]) == 5
    np.testing.assert_array_equal(per["infected"], true[kept].any(axis=(1, 2)))
    masks = prob[kept, 0] >= 0.5
    expected = [dice(m, t) for m, t in zip(masks, true[kept], strict=True)]
    np.testing.assert_allclose(per["dice"], expected)
    # MSE/SSIM compare the thresholded mask, not the probabilities.
    np.testing.assert_allclose(
        per["mse"], [mse(m, t) for m, t in zip(masks, true[kept], strict=True)]
    )
    np.testing.assert_allclose(
        per["ssim"], [ssim(m, t) for m, t in zip(masks, true[kept], strict=True)]
    )
    s = acc.compute()
    assert s["n_slices_with_mask"] == 5 and s["n_infected_slices"] == 4
    assert s["dice_mean"] == pytest.approx(np.mean(expected))
    assert s["dice_std"] == pytest.approx(np.std(expected))
    infected = per["infected"]
    assert s["dice_infected_mean"] == pytest.approx(np.mean(per["dice"][infected]))
    assert s["iou_mean"] == pytest.approx(per["iou"].mean())
    assert s["pixel_accuracy"] == pytest.approx(1 - per["mse"].mean())


def test_segmentation_accumulator_empty_and_perfect():
    # Two perfect empty slices and one perfect infected slice of 10x10 pixels.
    true = np.zeros((3, 10, 10), np.uint8)
    true[2, 2:5, 2:5] = 1
    acc = SegmentationAccumulator()
    acc.update(true.astype(np.float32), true)
    per = acc.per_slice()
    assert np.isinf(per["psnr"]).all()
    s = acc.compute()
    # Perfect slices are capped at the PSNR of a one-pixel error: 10 log10(100) = 20 dB.
    assert s["psnr"] == pytest.approx(20.0)
    assert s["dice_mean"] == 1.0 and s["dice_infected_mean"] == 1.0
    assert SegmentationAccumulator(psnr_cap=60.0).compute()["psnr"] is None
    capped = SegmentationAccumulator(psnr_cap=60.0)
    capped.update(true, true)
    assert capped.compute()["psnr"] == pytest.approx(60.0)
    # MONAI-style: both-empty slices left out of the Dice mean; no infected slice -> None.
    healthy = SegmentationAccumulator(empty=float("nan"))
    healthy.update(np.zeros((2, 10, 10)), np.zeros((2, 10, 10)))
    hs = healthy.compute()
    assert hs["dice_mean"] is None and hs["dice_infected_mean"] is None
    assert hs["pixel_accuracy"] == 1.0
    blank = SegmentationAccumulator().compute()
    assert blank["n_slices_with_mask"] == 0 and blank["dice_mean"] is None


masks = arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 6)))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), a=masks)
def test_dice_properties(data: st.DataObject, a: np.ndarray):
    b = data.draw(arrays(np.bool_, a.shape))
    d = dice(a, b)
    assert d == dice(b, a)
    assert 0.0 <= d <= 1.0
    assert iou(a, b) == pytest.approx(d / (2 - d))
