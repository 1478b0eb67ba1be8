"""Building blocks: convolution blocks, residual blocks and CBAM attention."""

from __future__ import annotations

import torch
from torch import nn

ATTENTIONS = ("cbam", None)


class ConvBlock(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers (the U-Net stage)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Pre-activation residual block (ResUNet, Zhang et al. 2018; Diakogiannis et al. 2020).

    BN-ReLU-conv3x3 (stride s) - BN-ReLU-conv3x3, plus a 1x1 (strided) projection shortcut when the
    shape changes.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=False),
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        )
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP over average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        # At least 4 hidden units (as many as the paper's first stage has): with 1 unit a tiny
        # model's channel MLP can start dead behind its ReLU and never learn.
        hidden = max(min(channels, 4), channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 conv over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Sequential):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel then spatial."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention(kernel_size))


def make_attention(name: str | None, channels: int) -> nn.Module:
    """Resolve an attention option to a module: ``"cbam"`` or ``None`` (identity)."""
    if name is None:
        return nn.Identity()
    if name == "cbam":
        return CBAM(channels)
    raise ValueError(f"unknown attention {name!r}; valid: {list(ATTENTIONS)}")
