"""An ensemble of networks of one config, with optional test-time flips, behaving as one model.

Averaging the logits of several seeds and of flipped copies of the input is the cheapest way to
steadier predictions on scans from new hospitals; wrapping it as a module keeps every caller
(predict, evaluate, export, Grad-CAM) unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import ModelConfig, MultiTaskOutput

#: Test-time flips: name -> the image axes it reverses.
FLIPS = {"lr": (-1,), "ud": (-2,), "lrud": (-2, -1)}


class Ensemble(nn.Module):
    """Mean of the members' logits over the input and its ``flips`` (each flip undone on the
    segmentation logits before averaging).

    Grad-CAM (:func:`lungmtl.explain.default_layer`) reads the first member's deepest map: the
    gradient of the mean decision with respect to it is that member's share of the decision.
    """

    def __init__(self, members: Sequence[nn.Module], flips: Sequence[str] = ()):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        unknown = sorted(set(flips) - set(FLIPS))
        if unknown:
            raise ValueError(f"unknown flip(s) {unknown}; valid: {sorted(FLIPS)}")
        configs = {m.config for m in members}
        if len(configs) != 1:
            raise ValueError("ensemble members must share one model config")
        self.members = nn.ModuleList(members)
        self.flips = tuple(flips)
        self.config: ModelConfig = members[0].config

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        views = [()] + [FLIPS[f] for f in self.flips]
        seg = cls = None
        for member in self.members:
            for dims in views:
                out = member(x.flip(dims) if dims else x)
                s = out.seg.flip(dims) if dims else out.seg
                seg = s if seg is None else seg + s
                cls = out.cls if cls is None else cls + out.cls
        k = len(self.members) * len(views)
        return MultiTaskOutput(seg / k, cls / k)
