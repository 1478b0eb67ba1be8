"""Shared encoders (:class:`lungmtl.models.base.Encoder`): one feature map per stride
(1, 2, 4, 8, 16) and their ``out_channels``."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .base import Encoder
from .blocks import ConvBlock, ResidualBlock, make_attention


class UNetEncoder(Encoder):
    """U-Net encoder: conv blocks with 2x2 max-pooling between stages, attention after each stage.

    Args:
        in_channels: image channels.
        channels: filters per level, shallow to deep; the last is the bottleneck.
        attention: ``"cbam"`` or ``None``.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], attention: str | None):
        super().__init__()
        self.out_channels = tuple(channels)
        ins = (in_channels, *channels[:-1])
        self.stages = nn.ModuleList(ConvBlock(i, o) for i, o in zip(ins, channels, strict=True))
        self.attn = nn.ModuleList(make_attention(attention, c) for c in channels)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, (stage, attn) in enumerate(zip(self.stages, self.attn, strict=True)):
            if i:
                x = self.pool(x)
            x = attn(stage(x))
            feats.append(x)
        return feats


class ResUNetEncoder(Encoder):
    """ResUNet encoder: residual blocks, down-sampling by stride-2 convolutions (Zhang et al.)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], attention: str | None):
        super().__init__()
        self.out_channels = tuple(channels)
        c0 = channels[0]
        # The first stage follows ResUNet: a plain conv before the first residual unit.
        stem = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1, bias=False),
            ResidualBlock(c0, c0),
        )
        stages: list[nn.Module] = [stem]
        stages += [ResidualBlock(i, o, stride=2) for i, o in itertools.pairwise(channels)]
        self.stages = nn.ModuleList(stages)
        self.attn = nn.ModuleList(make_attention(attention, c) for c in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage, attn in zip(self.stages, self.attn, strict=True):
            x = attn(stage(x))
            feats.append(x)
        return feats
