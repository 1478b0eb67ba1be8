"""The multi-task network: one shared encoder, a segmentation decoder, a classification head."""

from __future__ import annotations

import torch
from torch import nn

from .base import EXTERNAL, ModelConfig, MultiTaskOutput
from .decoders import UNetDecoder, UNetPlusPlusDecoder
from .encoders import Encoder, ResUNetEncoder, UNetEncoder
from .external import ExternalNet, build_external
from .heads import ClassificationHead, SegmentationHead

#: Backbone name -> (encoder class, decoder factory); the names are ``base.BACKBONE_NAMES``.
BACKBONES = {
    "unet": (UNetEncoder, lambda ch: UNetDecoder(ch)),
    "unetpp": (UNetEncoder, lambda ch: UNetPlusPlusDecoder(ch)),
    "resunet": (ResUNetEncoder, lambda ch: UNetDecoder(ch, residual=True)),
}


class MultiTaskNet(nn.Module):
    """Shared encoder -> segmentation decoder + 1x1 head, and a classifier on the deepest map."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        encoder_cls, decoder_factory = BACKBONES[config.name]
        ch = config.channels
        self.encoder: Encoder = encoder_cls(config.in_channels, ch, config.attention)
        self.decoder = decoder_factory(self.encoder.out_channels)
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


def build_model(config: ModelConfig) -> MultiTaskNet | ExternalNet:
    """The network a ``ModelConfig`` describes (lungmtl's own, or an ecosystem baseline)."""
    if config.name in EXTERNAL:
        return build_external(config)
    return MultiTaskNet(config)


def create_model(name: str = "unet", **config) -> MultiTaskNet | ExternalNet:
    """Build a model by backbone name; every option is a ``ModelConfig`` field.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).
        ImportError: an external baseline whose library is not installed (names the extra).
    """
    return build_model(ModelConfig.from_dict({"name": name, **config}))


def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad bottom/right so H and W are multiples of ``multiple``; also returns the old size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = nn.functional.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
