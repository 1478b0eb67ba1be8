"""Segmentation decoders over an encoder's feature list (shallow to deep)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock, ResidualBlock


class UNetDecoder(nn.Module):
    """U-Net up-sampling path: 2x2 transposed conv, concatenate the skip, conv block.

    Returns the full-resolution map with ``out_channels = encoder_channels[0]`` channels.
    """

    def __init__(self, encoder_channels: tuple[int, ...], residual: bool = False):
        super().__init__()
        block = ResidualBlock if residual else ConvBlock
        deep = encoder_channels[::-1]  # deepest first
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        ch = deep[0]
        for skip in deep[1:]:
            self.ups.append(nn.ConvTranspose2d(ch, skip, 2, stride=2))
            self.blocks.append(block(2 * skip, skip))
            ch = skip
        self.out_channels = ch

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        deep = feats[::-1]
        x = deep[0]
        for up, block, skip in zip(self.ups, self.blocks, deep[1:], strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x


class UNetPlusPlusDecoder(nn.Module):
    """U-Net++ nested dense skip pathways (Zhou et al., DLMIA 2018), without deep supervision.

    Node X[i][j] (level i, column j >= 1) convolves the concatenation of X[i][0..j-1] and the
    up-sampled X[i+1][j-1]. The output is X[0][L-1].
    """

    def __init__(self, encoder_channels: tuple[int, ...]):
        super().__init__()
        ch = encoder_channels
        self.depth = len(ch)
        self.ups = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                self.ups[f"{i}_{j}"] = nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2)
                self.nodes[f"{i}_{j}"] = ConvBlock(ch[i] * (j + 1), ch[i])
        self.out_channels = ch[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        grid: list[list[torch.Tensor]] = [[f] for f in feats]
        for j in range(1, self.depth):
            for i in range(self.depth - j):
                up = self.ups[f"{i}_{j}"](grid[i + 1][j - 1])
                grid[i].append(self.nodes[f"{i}_{j}"](torch.cat([*grid[i], up], dim=1)))
        return grid[0][-1]
