"""The multi-task network: one shared encoder, a segmentation decoder, a classification head."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .base import MODELS, Encoder, ModelConfig, ModelEntry, MultiTaskOutput
from .decoders import UNetDecoder, UNetPlusPlusDecoder
from .encoders import ResUNetEncoder, UNetEncoder
from .heads import ClassificationHead, SegmentationHead


class MultiTaskNet(nn.Module):
    """Shared encoder -> segmentation decoder + 1x1 head, and a classifier on the deepest map.

    Args:
        config: the model's hyper-parameters.
        encoder: encoder class, called as ``encoder(in_channels, channels, attention)``.
        decoder: decoder factory, called with the encoder's ``out_channels``.
    """

    def __init__(
        self,
        config: ModelConfig,
        encoder: type[Encoder],
        decoder: Callable[[tuple[int, ...]], nn.Module],
    ):
        super().__init__()
        self.config = config
        self.encoder: Encoder = encoder(config.in_channels, config.channels, config.attention)
        self.decoder = decoder(self.encoder.out_channels)
        self.seg_head = SegmentationHead(self.decoder.out_channels, config.seg_classes)
        self.cls_head = ClassificationHead(
            self.encoder.out_channels[-1], config.cls_hidden, config.dropout
        )

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        """Args:
        x: (N, in_channels, H, W) with H and W multiples of ``config.divisor`` (16 by default).
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        d = self.config.divisor
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(
                f"input height and width must be multiples of {d}, got {tuple(x.shape[-2:])}; "
                "resize or pad the slice (lungmtl.models.pad_to_multiple)"
            )
        feats = self.encoder(x)
        return MultiTaskOutput(self.seg_head(self.decoder(feats)), self.cls_head(feats[-1]))


MODELS.update(
    unet=ModelEntry(partial(MultiTaskNet, encoder=UNetEncoder, decoder=UNetDecoder)),
    unetpp=ModelEntry(partial(MultiTaskNet, encoder=UNetEncoder, decoder=UNetPlusPlusDecoder)),
    resunet=ModelEntry(
        partial(MultiTaskNet, encoder=ResUNetEncoder, decoder=partial(UNetDecoder, residual=True))
    ),
)


def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad bottom/right so H and W are multiples of ``multiple``; also returns the old size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
