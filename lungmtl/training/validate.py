"""Validation during training: the loss and the metrics that select the best epoch, streamed."""

from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import SliceTensors
from ..forward import forward_batches
from ..metrics import ClassificationAccumulator, SegmentationAccumulator

#: Metrics that can select the best checkpoint (all: higher is better, except val_loss).
SELECT_METRICS = ("val_score", "val_dice_infected", "val_auc", "val_accuracy", "val_loss")


def validation_metrics(model, data: SliceTensors, loss_fn, device, batch_size) -> dict:
    """Loss and the selection metrics on a held-out split, ``batch_size`` slices at a time: no
    logits or probability maps of the whole split are kept."""
    cls, seg = ClassificationAccumulator(), SegmentationAccumulator()
    # The loss of the whole split from its batches: the segmentation term is a mean over the
    # slices with a mask, the classification term a mean over all slices.
    seg_sum = cls_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_masked = int(data.has_mask.sum())
    for out in forward_batches(model, data.image, device, batch_size):
        label, hm = data.label[out.rows], data.has_mask[out.rows]
        cls.update(label.numpy(), out.p_infected.numpy())
        if hm.any():
            # Multiclass masks (0 background, 1 ground-glass, 2 consolidation) are scored as the
            # infection they outline, like the model's seg_prob (1 - p(background)).
            truth = data.mask[out.rows][hm].reshape(out.seg_prob[hm].shape) > 0
            seg.update(out.seg_prob[hm].numpy(), truth.numpy())
        mask = data.mask[out.rows].to(device)
        with torch.no_grad():
            part = loss_fn(
                out.seg,
                out.cls,
                mask if mask.dtype == torch.long else mask.float(),
                label.to(device),
                hm.to(device),
            )
        seg_sum = seg_sum + part.seg.double() * int(hm.sum())
        cls_sum = cls_sum + part.cls.double() * len(label)
    c = cls.compute()
    s = seg.compute() if n_masked else {}
    loss = loss_fn.combine(seg_sum / max(n_masked, 1), cls_sum / len(data))
    dice_inf = s.get("dice_infected_mean")
    auc = c.get("auc")
    parts = [v for v in (dice_inf, auc if auc is not None else c.get("accuracy")) if v is not None]
    return {
        "val_loss": float(loss),
        "val_accuracy": c.get("accuracy"),
        "val_auc": auc,
        "val_dice_infected": dice_inf,
        "val_dice": s.get("dice_mean"),
        # The default selection metric weighs both tasks equally: mean of Dice over infected
        # slices and AUC (accuracy where AUC is undefined).
        "val_score": float(np.mean(parts)) if parts else None,
    }
