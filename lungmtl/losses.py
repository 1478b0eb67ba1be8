"""Losses of the multi-task network: soft Dice, pixel BCE/CE, slice CE, and their weighted sum.

The paper trains with categorical cross-entropy on the classification head plus a smoothed Dice
loss on the segmentation head. Slices without an infection mask (healthy slices from a
label-only source, or slices whose annotation is unknown) must still train the classifier, so
the multi-task loss takes a per-sample ``has_mask`` flag and averages the segmentation term over
flagged samples only.

Shapes: segmentation logits are (N,C,H,W). With C == 1 the head is binary (sigmoid) and the
target is a 0/1 mask, (N,1,H,W) or (N,H,W). With C > 1 the head is multi-class (softmax) and the
target holds class indices (N,H,W) (long) or is one-hot (N,C,H,W); class 0 is background.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_sample: torch.Tensor, reduction: str, where: str) -> torch.Tensor:
    """Apply ``reduction`` to per-sample values (N,)."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise InputError(where, f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_logits(logits: torch.Tensor, where: str) -> None:
    if logits.ndim != 4:
        raise InputError(where, f"logits must be (N,C,H,W), got shape {tuple(logits.shape)}")


def _binary_target(logits: torch.Tensor, target: torch.Tensor, where: str) -> torch.Tensor:
    """A 0/1 target shaped like single-channel ``logits`` (N,1,H,W), as float."""
    if target.ndim == 3:
        target = target[:, None]
    if target.shape != logits.shape:
        raise InputError(
            where,
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}",
        )
    return target.to(dtype=logits.dtype)


def _one_hot_target(logits: torch.Tensor, target: torch.Tensor, where: str) -> torch.Tensor:
    """A one-hot float target (N,C,H,W) for multi-class ``logits``."""
    n, c, h, w = logits.shape
    if target.ndim == 4 and target.shape == logits.shape:
        return target.to(dtype=logits.dtype)
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != (n, h, w):
        raise InputError(
            where,
            f"target must be class indices (N,H,W) or one-hot (N,C,H,W) for logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}",
        )
    if target.is_floating_point():
        target = target.round()
    target = target.long()
    if target.device.type == "cpu":  # elsewhere reading the values would wait for the device
        check_class_indices(target, c, where)
    return F.one_hot(target, c).permute(0, 3, 1, 2).to(dtype=logits.dtype)


def check_class_indices(target: torch.Tensor, classes: int, where: str) -> None:
    """Raise unless every value of ``target`` is a class index in [0, ``classes`` - 1].

    The losses check CPU targets only: on an accelerator the check would stop the host until the
    device has caught up, every step. Training checks each split's masks once instead, and an
    index out of range on a GPU otherwise ends in a device-side assert of ``one_hot``.
    """
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise InputError(where, f"target class indices must lie in [0, {classes - 1}]")


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.0,
    from_logits: bool = True,
    reduction: str = "mean",
    alpha: float = 0.5,
    beta: float = 0.5,
) -> torch.Tensor:
    """Soft Dice loss per sample: 1 - (2|X∩Y| + eps) / (|X| + |Y| + eps).

    With ``alpha``/``beta`` other than 0.5 it is the Tversky loss,
    1 - (TP + eps/2) / (TP + alpha FP + beta FN + eps/2): ``beta`` > ``alpha`` weighs missed
    infection above false outline, against under-segmenting extensive disease (0.5/0.5 is Dice).

    Sums run over the pixels of one sample, so each slice gets its own Dice (no batch pooling).
    With C > 1 the loss is averaged over the foreground classes 1..C-1.

    Empty masks: with ``eps`` = 1, a (near) empty prediction on an empty target gives
    dice = eps / eps = 1, so the loss is ~0; a confident false positive of area A on an empty
    target gives dice = eps / (A + eps), so the loss is ~1. ``eps`` = 0 is allowed but makes an
    empty prediction on an empty target 0/0 (NaN); keep it positive.

    Args:
        logits: (N,C,H,W) raw scores (or probabilities with ``from_logits=False``).
        target: C == 1: 0/1 mask (N,1,H,W) or (N,H,W); C > 1: class indices (N,H,W) or one-hot.
        eps: smoothing added to numerator and denominator (the paper's epsilon).
        from_logits: apply sigmoid (C == 1) or softmax (C > 1) first.
        reduction: "mean" or "sum" over samples, or "none" for the per-sample losses (N,).

    Returns:
        A scalar, or (N,) with ``reduction="none"``.
    """
    where = "dice_loss"
    _check_logits(logits, where)
    if reduction not in _REDUCTIONS:
        raise InputError(where, f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    # Dice sums over ~50k pixels: keep them in float32 even under autocast.
    logits = logits.float()
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits) if from_logits else logits
        tgt = _binary_target(logits, target, where)
    else:
        prob = torch.softmax(logits, dim=1) if from_logits else logits
        tgt = _one_hot_target(logits, target, where)
        # Background would dominate the average and is not what the paper scores.
        prob, tgt = prob[:, 1:], tgt[:, 1:]
    dims = (2, 3)
    inter = (prob * tgt).sum(dims)
    if alpha == 0.5 and beta == 0.5:
        denom = prob.sum(dims) + tgt.sum(dims)
        dice = (2 * inter + eps) / (denom + eps)  # (N, C_fg)
    else:
        fp, fn = prob.sum(dims) - inter, tgt.sum(dims) - inter
        dice = (inter + eps / 2) / (inter + alpha * fp + beta * fn + eps / 2)
    return _reduce(1 - dice.mean(dim=1), reduction, where)


def seg_bce(
    logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean", focal_gamma: float = 0.0
) -> torch.Tensor:
    """Pixel-wise cross-entropy, averaged over the pixels of each sample.

    C == 1: binary cross-entropy with logits on a 0/1 mask. C > 1: categorical cross-entropy on
    class indices (or one-hot / soft targets). ``focal_gamma`` > 0 makes it the focal loss
    (each pixel weighted by (1 - p_true) ** gamma), so easy background stops dominating.

    Args:
        logits: (N,C,H,W) raw scores.
        target: as for :func:`dice_loss`.
        reduction: "mean" or "sum" over samples, or "none" for the per-sample losses (N,).

    Returns:
        A scalar, or (N,) with ``reduction="none"``.
    """
    where = "seg_bce"
    _check_logits(logits, where)
    if reduction not in _REDUCTIONS:
        raise InputError(where, f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    logits = logits.float()
    if logits.shape[1] == 1:
        tgt = _binary_target(logits, target, where)
        pix = F.binary_cross_entropy_with_logits(logits, tgt, reduction="none")[:, 0]
    else:
        tgt = _one_hot_target(logits, target, where)
        pix = F.cross_entropy(logits, tgt, reduction="none")  # (N,H,W)
    if focal_gamma:
        pix = pix * (1 - torch.exp(-pix)).pow(focal_gamma)  # exp(-CE) is p of the true class
    return _reduce(pix.flatten(1).mean(dim=1), reduction, where)


def cls_ce(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Categorical cross-entropy of the slice classifier.

    Args:
        logits: (N,2) raw scores (healthy, infected).
        labels: (N,) class indices, 1 = infected.
        reduction: "mean", "sum" or "none" (per-sample losses (N,)).

    Returns:
        A scalar, or (N,) with ``reduction="none"``.
    """
    where = "cls_ce"
    if reduction not in _REDUCTIONS:
        raise InputError(where, f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise InputError(
            where,
            f"logits must be (N,K) and labels (N,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}",
        )
    return F.cross_entropy(logits.float(), labels.long(), reduction=reduction)


class LossOutput(NamedTuple):
    """The multi-task loss and its two (unweighted) parts, all scalar tensors."""

    total: torch.Tensor
    seg: torch.Tensor
    cls: torch.Tensor


class MultiTaskLoss(nn.Module):
    """``cls_weight`` * CE(classification) + ``seg_weight`` * segmentation loss.

    The segmentation loss is ``dice_weight`` * Dice + ``bce_weight`` * BCE, averaged only over the
    samples with ``has_mask``; the classification term averages over all samples. The paper's
    default is CE + Dice (``bce_weight=0``). ``seg_weight=0`` gives a classification-only model
    and ``cls_weight=0`` a segmentation-only one (single-task ablations): a zero-weighted term is
    still reported in :class:`LossOutput` (detached) but never enters ``total``, so a NaN in an
    unused head cannot poison the gradient.

    Args:
        seg_weight: weight of the segmentation term.
        cls_weight: weight of the classification term.
        dice_weight: weight of soft Dice inside the segmentation term.
        bce_weight: weight of pixel BCE/CE inside the segmentation term.
        eps: Dice smoothing epsilon.
        tversky_alpha, tversky_beta: false-positive and false-negative weights of the overlap
            term (0.5 / 0.5: Dice; e.g. 0.3 / 0.7: Tversky, favouring recall).
        focal_gamma: focusing exponent of the pixel term (0: plain BCE/CE).
    """

    def __init__(
        self,
        seg_weight: float = 1.0,
        cls_weight: float = 1.0,
        dice_weight: float = 1.0,
        bce_weight: float = 0.0,
        eps: float = 1.0,
        tversky_alpha: float = 0.5,
        tversky_beta: float = 0.5,
        focal_gamma: float = 0.0,
    ):
        super().__init__()
        where = "loss config"
        named = {
            "seg_weight": seg_weight,
            "cls_weight": cls_weight,
            "dice_weight": dice_weight,
            "bce_weight": bce_weight,
            "eps": eps,
            "tversky_alpha": tversky_alpha,
            "tversky_beta": tversky_beta,
            "focal_gamma": focal_gamma,
        }
        for name, value in named.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(where, f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InputError(where, f"{name} must be finite and >= 0, got {value!r}")
        if seg_weight == 0 and cls_weight == 0:
            raise InputError(where, "seg_weight and cls_weight are both 0: nothing to train")
        if seg_weight > 0 and dice_weight == 0 and bce_weight == 0:
            raise InputError(where, "seg_weight > 0 needs dice_weight or bce_weight > 0")
        self.seg_weight = float(seg_weight)
        self.cls_weight = float(cls_weight)
        self.dice_weight = float(dice_weight)
        self.bce_weight = float(bce_weight)
        self.eps = float(eps)
        if tversky_alpha + tversky_beta == 0:
            raise InputError(where, "tversky_alpha and tversky_beta are both 0: no overlap loss")
        self.tversky_alpha = float(tversky_alpha)
        self.tversky_beta = float(tversky_beta)
        self.focal_gamma = float(focal_gamma)

    def extra_repr(self) -> str:
        return (
            f"seg_weight={self.seg_weight}, cls_weight={self.cls_weight}, "
            f"dice_weight={self.dice_weight}, bce_weight={self.bce_weight}, eps={self.eps}, "
            f"tversky=({self.tversky_alpha}, {self.tversky_beta}), focal_gamma={self.focal_gamma}"
        )

    def segmentation(
        self, seg_logits: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor
    ) -> torch.Tensor:
        """The segmentation term averaged over the samples with a mask.

        Args:
            seg_logits: (N,C,H,W).
            mask: target as for :func:`dice_loss`; rows without ``has_mask`` are never used.
            has_mask: (N,) bool.

        Returns:
            A scalar; 0 (with a defined, all-zero gradient) when no sample has a mask.
        """
        # Masking by weights rather than by indexing avoids a host-device sync per step. The
        # unflagged targets are zeroed first so a placeholder (even NaN) cannot leak into the
        # loss or its gradient.
        flag = has_mask.reshape(-1, *([1] * (mask.ndim - 1)))
        target = torch.where(flag, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
        per = seg_logits.new_zeros(seg_logits.shape[0], dtype=torch.float32)
        if self.dice_weight:
            per = per + self.dice_weight * dice_loss(
                seg_logits,
                target,
                eps=self.eps,
                reduction="none",
                alpha=self.tversky_alpha,
                beta=self.tversky_beta,
            )
        if self.bce_weight:
            per = per + self.bce_weight * seg_bce(
                seg_logits, target, reduction="none", focal_gamma=self.focal_gamma
            )
        w = has_mask.to(per.dtype)
        return (per * w).sum() / w.sum().clamp_min(1.0)

    def forward(
        self,
        seg_logits: torch.Tensor,
        cls_logits: torch.Tensor,
        mask: torch.Tensor,
        label: torch.Tensor,
        has_mask: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the weighted multi-task loss.

        Args:
            seg_logits: (N,C,H,W) segmentation logits.
            cls_logits: (N,2) classification logits.
            mask: (N,1,H,W) / (N,H,W) 0/1 mask, or class indices for C > 1.
            label: (N,) long, 1 = infected.
            has_mask: (N,) bool, which samples have a usable mask; ``None`` means all do.

        Returns:
            LossOutput(total, seg, cls).
        """
        n = seg_logits.shape[0]
        if has_mask is None:
            has_mask = torch.ones(n, dtype=torch.bool, device=seg_logits.device)
        has_mask = has_mask.to(device=seg_logits.device, dtype=torch.bool).reshape(-1)
        if has_mask.shape[0] != n or mask.shape[0] != n or cls_logits.shape[0] != n:
            raise InputError(
                "MultiTaskLoss",
                f"batch sizes differ: seg_logits {n}, cls_logits {cls_logits.shape[0]}, "
                f"mask {mask.shape[0]}, has_mask {has_mask.shape[0]}",
            )
        if self.seg_weight:
            seg = self.segmentation(seg_logits, mask, has_mask)
        else:
            with torch.no_grad():
                seg = self.segmentation(seg_logits, mask, has_mask)
        cls = cls_ce(cls_logits, label)
        if not self.cls_weight:
            cls = cls.detach()
        return LossOutput(self.combine(seg, cls), seg, cls)

    def combine(self, seg: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """The weighted total of the two terms (a zero-weighted one left out)."""
        total = cls.new_zeros(())
        if self.seg_weight:
            total = total + self.seg_weight * seg
        if self.cls_weight:
            total = total + self.cls_weight * cls
        return total
