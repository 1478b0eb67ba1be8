"""Batched forward passes shared by training (validation), evaluation and inference."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .data.dataset import SliceTensors
from .device import autocast, prepare_input


class Predictions(NamedTuple):
    """Per-slice model outputs. ``p_infected`` (N,) float; ``seg_prob`` (N,S,S) float32 infection
    probability (for 3 classes: 1 - P(background))."""

    p_infected: np.ndarray
    seg_prob: np.ndarray
    cls_logits: torch.Tensor | None = None
    seg_logits: torch.Tensor | None = None


@torch.no_grad()
def predict_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
    keep_logits: bool = False,
) -> Predictions:
    """Run ``model`` over images (N,1,S,S) in batches; returns probabilities on the CPU
    (and the raw logits with ``keep_logits``, e.g. for a validation loss)."""
    model.eval()
    if len(images) == 0:
        size = images.shape[-1]
        return Predictions(np.zeros(0, np.float32), np.zeros((0, size, size), np.float32))
    ps, segs, cls_l, seg_l = [], [], [], []
    for i in range(0, len(images), batch_size):
        x = prepare_input(images[i : i + batch_size].float(), device)
        with autocast(device):
            out = model(x)
        p = torch.softmax(out.cls.float(), dim=1)[:, 1]
        seg = out.seg.float()
        prob = torch.sigmoid(seg[:, 0]) if seg.shape[1] == 1 else 1 - torch.softmax(seg, 1)[:, 0]
        ps.append(p.cpu())
        segs.append(prob.cpu())
        if keep_logits:
            cls_l.append(out.cls.float().cpu())
            seg_l.append(seg.cpu())
    return Predictions(
        torch.cat(ps).numpy(),
        torch.cat(segs).numpy(),
        torch.cat(cls_l) if keep_logits else None,
        torch.cat(seg_l) if keep_logits else None,
    )


def predict_tensors(
    model: torch.nn.Module,
    data: SliceTensors,
    device: torch.device,
    batch_size: int = 32,
    keep_logits: bool = False,
) -> Predictions:
    return predict_images(model, data.image, device, batch_size, keep_logits)
