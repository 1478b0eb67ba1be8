"""Task heads: per-pixel segmentation logits and slice classification logits."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Conv2d):
    """1x1 convolution to ``classes`` logit maps (sigmoid for 1 class, softmax for several)."""

    def __init__(self, in_channels: int, classes: int):
        super().__init__(in_channels, classes, 1)


class ClassificationHead(nn.Module):
    """Global average pooling -> dense 512 -> dense 128 -> dropout -> dense 2 (the paper's head)."""

    def __init__(
        self, in_channels: int, hidden: tuple[int, ...] = (512, 128), dropout: float = 0.5
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        prev = in_channels
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        layers += [nn.Dropout(dropout), nn.Linear(prev, 2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
