"""Losses: hand-worked Dice values, empty masks, reductions, gradients, the has_mask rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lungmtl import metrics
from lungmtl.errors import InputError
from lungmtl.losses import LossOutput, MultiTaskLoss, cls_ce, dice_loss, seg_bce


def _t(rows: list[list[float]]) -> torch.Tensor:
    """One (1,1,H,W) tensor from a 2-D list."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def test_dice_loss_hand_worked():
    # X = {(0,0), (0,1)}, Y = {(0,0)}: |X∩Y| = 1, |X| = 2, |Y| = 1.
    # eps = 1: dice = (2*1 + 1) / (2 + 1 + 1) = 3/4, loss = 1/4.
    # eps = 0: dice = 2/3, loss = 1/3.
    prob = _t([[1, 1], [0, 0]])
    tgt = _t([[1, 0], [0, 0]])
    assert dice_loss(prob, tgt, eps=1.0, from_logits=False).item() == pytest.approx(0.25)
    assert dice_loss(prob, tgt, eps=0.0, from_logits=False).item() == pytest.approx(1 / 3)


def test_dice_loss_soft_probabilities_hand_worked():
    # p = [0.5, 0.25], y = [1, 0], eps = 1: inter = 0.5, |X| = 0.75, |Y| = 1
    # dice = (1 + 1) / (1.75 + 1) = 2 / 2.75, loss = 0.75 / 2.75.
    prob = _t([[0.5, 0.25]])
    tgt = _t([[1, 0]])
    assert dice_loss(prob, tgt, from_logits=False).item() == pytest.approx(0.75 / 2.75)
    # The same through the sigmoid: logit(0.5) = 0, logit(0.25) = -ln 3.
    logits = _t([[0.0, -math.log(3.0)]])
    assert dice_loss(logits, tgt).item() == pytest.approx(0.75 / 2.75, abs=1e-6)


def test_dice_loss_empty_masks():
    empty = torch.zeros(1, 1, 8, 8)
    # Confidently empty prediction on an empty target: dice = eps/eps -> loss ~ 0.
    assert dice_loss(torch.full((1, 1, 8, 8), -30.0), empty).item() == pytest.approx(0, abs=1e-6)
    # Confident false positive over all 64 pixels: dice = 1/65 -> loss ~ 1 - 1/65.
    fp = dice_loss(torch.full((1, 1, 8, 8), 30.0), empty).item()
    assert fp == pytest.approx(1 - 1 / 65, abs=1e-6)


def test_dice_loss_reductions_and_target_shapes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 6, 7, generator=g)
    tgt = (torch.rand(5, 6, 7, generator=g) > 0.5).float()
    per = dice_loss(logits, tgt, reduction="none")
    assert per.shape == (5,)
    assert torch.allclose(dice_loss(logits, tgt), per.mean())
    assert torch.allclose(dice_loss(logits, tgt, reduction="sum"), per.sum())
    # (N,H,W) and (N,1,H,W) targets are the same thing; bool is accepted too.
    assert torch.allclose(per, dice_loss(logits, tgt[:, None], reduction="none"))
    assert torch.allclose(per, dice_loss(logits, tgt.bool(), reduction="none"))
    # Per-sample, not pooled over the batch: sample 0 alone gives the same value.
    assert torch.allclose(per[0], dice_loss(logits[:1], tgt[:1]))


def test_dice_loss_matches_metric_on_hard_masks():
    # eps = 0 on hard 0/1 "probabilities" is exactly 1 - Dice of the masks.
    rng = np.random.default_rng(1)
    pred = rng.random((4, 9, 11)) > 0.5
    true = rng.random((4, 9, 11)) > 0.6
    loss = dice_loss(
        torch.from_numpy(pred[:, None]).float(),
        torch.from_numpy(true).float(),
        eps=0.0,
        from_logits=False,
        reduction="none",
    )
    expected = [1 - metrics.dice(p, t) for p, t in zip(pred, true, strict=True)]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_dice_loss_multiclass_hand_worked_and_one_hot():
    # Three classes on a 1x2 image, hard probabilities: pixel 0 -> class 1, pixel 1 -> class 2.
    # Target: pixel 0 class 1, pixel 1 class 1. eps = 1.
    # class 1: inter 1, |X| 1, |Y| 2: dice (2+1)/(3+1) = 0.75
    # class 2: inter 0, |X| 1, |Y| 0: dice 1/2 = 0.5
    # loss = 1 - mean(0.75, 0.5) = 0.375 (background is not averaged in).
    prob = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]])  # (1,3,1,2)
    idx = torch.tensor([[[1, 1]]])  # (1,1,2)
    loss = dice_loss(prob, idx, from_logits=False)
    assert loss.item() == pytest.approx(0.375)
    one_hot = F.one_hot(idx, 3).permute(0, 3, 1, 2).float()
    assert dice_loss(prob, one_hot, from_logits=False).item() == pytest.approx(0.375)


def test_seg_bce_matches_torch():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 5, 5, generator=g)
    tgt = (torch.rand(3, 1, 5, 5, generator=g) > 0.5).float()
    per = seg_bce(logits, tgt, reduction="none")
    ref = F.binary_cross_entropy_with_logits(logits, tgt, reduction="none").mean(dim=(1, 2, 3))
    assert torch.allclose(per, ref)
    assert torch.allclose(seg_bce(logits, tgt), ref.mean())
    logits3 = torch.randn(3, 3, 5, 5, generator=g)
    idx = torch.randint(0, 3, (3, 5, 5), generator=g)
    assert torch.allclose(seg_bce(logits3, idx), F.cross_entropy(logits3, idx))


def test_cls_ce_hand_worked():
    # Equal logits: p = 1/2 for either class -> CE = ln 2.
    assert cls_ce(torch.zeros(2, 2), torch.tensor([0, 1])).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    labels = torch.tensor([1, 1])
    assert torch.allclose(cls_ce(logits, labels), F.cross_entropy(logits, labels))
    assert cls_ce(logits, labels, reduction="none").shape == (2,)


def test_dice_loss_decreases_with_sgd():
    # A free logit map fitted to a square: a few SGD steps must lower the loss a lot.
    tgt = torch.zeros(1, 1, 16, 16)
    tgt[..., 4:10, 5:12] = 1
    logits = torch.zeros(1, 1, 16, 16, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=200.0)
    start = dice_loss(logits, tgt).item()
    for _ in range(30):
        opt.zero_grad()
        loss = dice_loss(logits, tgt)
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        opt.step()
    end = dice_loss(logits, tgt).item()
    assert end < 0.2 * start
    assert metrics.dice(logits.detach()[0, 0] > 0, tgt[0, 0]) > 0.9


def _batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randn(n, 1, 8, 8, generator=g, requires_grad=True)
    cls = torch.randn(n, 2, generator=g, requires_grad=True)
    mask = (torch.rand(n, 1, 8, 8, generator=g) > 0.5).float()
    label = torch.randint(0, 2, (n,), generator=g)
    return seg, cls, mask, label


def test_multitask_no_mask_trains_classification_only():
    seg, cls, mask, label = _batch()
    out = MultiTaskLoss()(seg, cls, mask, label, torch.zeros(4, dtype=torch.bool))
    assert isinstance(out, LossOutput)
    assert out.seg.item() == 0.0
    assert torch.allclose(out.total, cls_ce(cls, label))
    out.total.backward()
    # The segmentation head gets a defined, all-zero gradient; the classifier a real one.
    assert seg.grad is None or (torch.isfinite(seg.grad).all() and seg.grad.abs().sum() == 0)
    assert cls.grad.abs().sum() > 0


def test_multitask_mixed_mask_ignores_unflagged_samples():
    seg, cls, mask, label = _batch()
    has = torch.tensor([True, False, True, False])
    fn = MultiTaskLoss(bce_weight=0.5)
    out = fn(seg, cls, mask, label, has)
    # Seg term = mean over the flagged samples of Dice + 0.5 * BCE.
    sub = seg[has]
    expected = dice_loss(sub, mask[has]) + 0.5 * seg_bce(sub, mask[has])
    assert torch.allclose(out.seg, expected)
    assert torch.allclose(out.total, out.seg + out.cls)
    # Changing (even poisoning) an unflagged mask changes nothing, value or gradient.
    other = mask.clone()
    other[1] = 1 - other[1]
    other[3] = float("nan")
    out2 = fn(seg, cls, other, label, has)
    assert torch.equal(out.total, out2.total)
    g1 = torch.autograd.grad(out.total, seg)[0]
    g2 = torch.autograd.grad(out2.total, seg)[0]
    assert torch.isfinite(g2).all() and torch.equal(g1, g2)
    assert g1[1].abs().sum() == 0 and g1[0].abs().sum() > 0
    # Changing a flagged mask does change it.
    other[0] = 1 - other[0]
    assert not torch.equal(out.total, fn(seg, cls, other, label, has).total)


def test_multitask_weights_and_single_task():
    seg, cls, mask, label = _batch()
    has = torch.ones(4, dtype=torch.bool)
    both = MultiTaskLoss(seg_weight=2.0, cls_weight=0.5)(seg, cls, mask, label, has)
    assert torch.allclose(both.total, 2.0 * both.seg + 0.5 * both.cls)
    assert torch.allclose(both.seg, dice_loss(seg, mask))
    # Classification-only: a NaN in the (unused) segmentation head cannot reach the total.
    bad_seg = torch.full_like(seg, float("nan"))
    cls_only = MultiTaskLoss(seg_weight=0.0)(bad_seg, cls, mask, label, has)
    assert torch.allclose(cls_only.total, cls_ce(cls, label))
    seg_only = MultiTaskLoss(cls_weight=0.0)(seg, torch.full_like(cls, float("nan")), mask, label)
    assert torch.allclose(seg_only.total, dice_loss(seg, mask))
    seg_only.total.backward()
    assert torch.isfinite(seg.grad).all()


def test_multitask_multiclass_targets():
    g = torch.Generator().manual_seed(3)
    seg = torch.randn(3, 3, 6, 6, generator=g)
    idx = torch.randint(0, 3, (3, 6, 6), generator=g)
    has = torch.tensor([True, True, False])
    out = MultiTaskLoss()(seg, torch.zeros(3, 2), idx, torch.tensor([0, 1, 1]), has)
    assert torch.allclose(out.seg, dice_loss(seg[:2], idx[:2]))


def test_bad_options_raise():
    with pytest.raises(TypeError):
        MultiTaskLoss(focal_weight=1.0)  # type: ignore[call-arg]
    with pytest.raises(InputError, match="seg_weight"):
        MultiTaskLoss(seg_weight=-1.0)
    with pytest.raises(InputError, match="nothing to train"):
        MultiTaskLoss(seg_weight=0.0, cls_weight=0.0)
    with pytest.raises(InputError, match="dice_weight or bce_weight"):
        MultiTaskLoss(dice_weight=0.0, bce_weight=0.0)
    with pytest.raises(InputError, match="eps"):
        MultiTaskLoss(eps=float("nan"))
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(InputError, match="reduction"):
        dice_loss(x, x, reduction="avg")
    with pytest.raises(InputError, match="reduction"):
        seg_bce(x, x, reduction="avg")
    with pytest.raises(InputError, match="does not match"):
        dice_loss(x, torch.zeros(2, 1, 4, 5))
    with pytest.raises(InputError, match="class indices"):
        dice_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3))
    with pytest.raises(InputError, match="batch sizes"):
        MultiTaskLoss()(x, torch.zeros(3, 2), x, torch.zeros(3), torch.ones(2, dtype=torch.bool))


def test_a_multiclass_step_never_reads_values_back_from_the_device():
    """Checking class indices reads them on the host (a GPU sync per step): the loss checks
    CPU targets only. On the meta device any read back raises, so the loss must not read."""
    logits = torch.zeros(2, 3, 4, 4, device="meta", requires_grad=True)
    target = torch.zeros(2, 4, 4, dtype=torch.long, device="meta")
    loss = MultiTaskLoss(bce_weight=1.0)(
        logits, torch.zeros(2, 2, device="meta"), target, torch.zeros(2, device="meta").long()
    )
    assert loss.total.device.type == "meta"
    with pytest.raises(InputError, match="class indices"):  # on the CPU it is still checked
        dice_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), -1))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 4),
    eps=st.floats(0.01, 5.0),
    scale=st.floats(0.1, 50.0),
)
def test_dice_loss_bounded(seed: int, n: int, eps: float, scale: float):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, 5, 6, generator=g) * scale
    tgt = (torch.rand(n, 1, 5, 6, generator=g) > 0.5).float()
    per = dice_loss(logits, tgt, eps=eps, reduction="none")
    assert ((per >= -1e-6) & (per <= 1 + 1e-6)).all()


def test_tversky_hand_worked_and_dice_at_one_half():
    # prob = [1, 1, 0, 0], y = [1, 0, 1, 1]: TP 1, FP 1, FN 2; eps 0.
    prob, tgt = _t([[1, 1, 0, 0]]), _t([[1, 0, 1, 1]])
    dice = dice_loss(prob, tgt, eps=0.0, from_logits=False)
    same = dice_loss(prob, tgt, eps=0.0, from_logits=False, alpha=0.5, beta=0.5)
    assert dice.item() == pytest.approx(1 - 2 / 5) and same.item() == dice.item()
    # Tversky 0.3 / 0.7: 1 / (1 + 0.3 * 1 + 0.7 * 2) = 1 / 2.7
    tv = dice_loss(prob, tgt, eps=0.0, from_logits=False, alpha=0.3, beta=0.7)
    assert tv.item() == pytest.approx(1 - 1 / 2.7)


def test_tversky_with_beta_above_alpha_punishes_missed_infection_more():
    tgt = _t([[1, 1, 1, 1, 0, 0, 0, 0]])
    under = _t([[1, 1, 0, 0, 0, 0, 0, 0]])  # misses half the lesion
    over = _t([[1, 1, 1, 1, 1, 1, 0, 0]])  # outlines half as much again
    kw = {"eps": 0.0, "from_logits": False}
    # beta > alpha: the half-missed lesion costs more than the half-again outline; swapped: less
    tv_under = dice_loss(under, tgt, alpha=0.3, beta=0.7, **kw).item()
    tv_over = dice_loss(over, tgt, alpha=0.3, beta=0.7, **kw).item()
    assert tv_under > tv_over
    assert (
        dice_loss(under, tgt, alpha=0.7, beta=0.3, **kw).item()
        < dice_loss(over, tgt, alpha=0.7, beta=0.3, **kw).item()
    )


def test_focal_term_down_weights_easy_pixels():
    logits = torch.tensor([[4.0, 0.0]])[None, None]  # an easy and a hard pixel, both truly 1
    tgt = torch.ones_like(logits)
    plain = F.binary_cross_entropy_with_logits(logits, tgt, reduction="none")[0, 0, 0]
    focal = seg_bce(logits, tgt, reduction="none", focal_gamma=2.0)
    p = torch.sigmoid(logits)[0, 0, 0]
    expected = (plain * (1 - p) ** 2).mean()
    assert focal.item() == pytest.approx(expected.item(), rel=1e-5)
    assert seg_bce(logits, tgt, focal_gamma=0.0).item() == pytest.approx(plain.mean().item())


def test_multitask_loss_takes_tversky_and_focal_and_refuses_no_overlap_term():
    loss = MultiTaskLoss(bce_weight=1.0, tversky_alpha=0.3, tversky_beta=0.7, focal_gamma=2.0)
    assert "tversky=(0.3, 0.7)" in repr(loss)
    seg = torch.randn(2, 1, 8, 8, requires_grad=True)
    out = loss(seg, torch.randn(2, 2), (torch.rand(2, 1, 8, 8) > 0.5).float(), torch.ones(2).long())
    out.total.backward()
    assert torch.isfinite(seg.grad).all() and seg.grad.abs().sum() > 0
    with pytest.raises(InputError, match="both 0"):
        MultiTaskLoss(tversky_alpha=0.0, tversky_beta=0.0)
