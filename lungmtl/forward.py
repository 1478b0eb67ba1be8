"""Batched forward passes shared by training (validation), evaluation and prediction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from .device import autocast, prepare_input


class SliceProbabilities(NamedTuple):
    """Per-slice model outputs. ``p_infected`` (N,) float; ``seg_prob`` (N,S,S) float32 infection
    probability (for 3 classes: 1 - P(background))."""

    p_infected: np.ndarray
    seg_prob: np.ndarray


class BatchOutput(NamedTuple):
    """One batch of :func:`forward_batches`: ``rows`` of the input it covers, the float32
    logits on the device (``cls`` (n,2), ``seg`` (n,C,S,S)), and the probabilities on the CPU
    (``p_infected`` (n,), ``seg_prob`` (n,S,S))."""

    rows: slice
    cls: torch.Tensor
    seg: torch.Tensor
    p_infected: torch.Tensor
    seg_prob: torch.Tensor


@torch.no_grad()
def forward_batches(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> Iterator[BatchOutput]:
    """Run ``model`` (in eval mode) over images (N,1,S,S), ``batch_size`` slices at a time."""
    model.eval()
    for i in range(0, len(images), batch_size):
        x = prepare_input(images[i : i + batch_size].float(), device)
        with autocast(device):
            out = model(x)
        cls, seg = out.cls.float(), out.seg.float()
        p = torch.softmax(cls, dim=1)[:, 1]
        prob = torch.sigmoid(seg[:, 0]) if seg.shape[1] == 1 else 1 - torch.softmax(seg, 1)[:, 0]
        yield BatchOutput(slice(i, i + len(x)), cls, seg, p.cpu(), prob.cpu())


def slice_probabilities(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> SliceProbabilities:
    """Run ``model`` over images (N,1,S,S) in batches; returns probabilities on the CPU."""
    if len(images) == 0:
        model.eval()
        size = images.shape[-1]
        return SliceProbabilities(np.zeros(0, np.float32), np.zeros((0, size, size), np.float32))
    ps, segs = [], []
    for out in forward_batches(model, images, device, batch_size):
        ps.append(out.p_infected)
        segs.append(out.seg_prob)
    return SliceProbabilities(torch.cat(ps).numpy(), torch.cat(segs).numpy())
