"""The multi-task network: one shared encoder, a segmentation decoder, a classification head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .blocks import ATTENTIONS
from .decoders import UNetDecoder, UNetPlusPlusDecoder
from .encoders import Encoder, ResUNetEncoder, UNetEncoder
from .external import EXTERNAL, ExternalNet, build_external
from .heads import ClassificationHead, SegmentationHead

#: Backbone name -> (encoder class, decoder factory).
BACKBONES = {
    "unet": (UNetEncoder, lambda ch: UNetDecoder(ch)),
    "unetpp": (UNetEncoder, lambda ch: UNetPlusPlusDecoder(ch)),
    "resunet": (ResUNetEncoder, lambda ch: UNetDecoder(ch, residual=True)),
}


class MultiTaskOutput(NamedTuple):
    """What every model returns.

    Shape:
        seg: (N, seg_classes, H, W) segmentation logits.
        cls: (N, 2) classification logits (index 1 = infected).
    """

    seg: torch.Tensor
    cls: torch.Tensor


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that fully define a network; saved inside every checkpoint.

    Args:
        name: backbone, one of ``BACKBONES`` (unet, unetpp, resunet), or an ecosystem baseline
            of :mod:`lungmtl.models.external` (smp-unet, monai-unet; optional extras).
        attention: ``"cbam"`` (after each encoder stage) or ``None`` ("simple multi-task");
            the external baselines take ``None`` only.
        widths: encoder filters per level, shallow to deep, before the bottleneck.
        bottleneck: filters of the deepest level (stride 16); ``None`` = ``widths[-1]``.
        width_mult: multiplies every width (small CPU models), at least 1 filter each.
        in_channels: image channels.
        seg_classes: 1 (infection) or 3 (background / ground-glass / consolidation).
        cls_hidden: dense layers of the classification head.
        dropout: dropout before the last dense layer.
        encoder: smp-unet's encoder name (``None`` = resnet34); other models take ``None``.
    """

    name: str = "unet"
    attention: str | None = "cbam"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    bottleneck: int | None = None
    width_mult: float = 1.0
    in_channels: int = 1
    seg_classes: int = 1
    cls_hidden: tuple[int, ...] = (512, 128)
    dropout: float = 0.5
    encoder: str | None = None

    def __post_init__(self) -> None:
        if self.name not in BACKBONES and self.name not in EXTERNAL:
            raise ValueError(
                f"unknown model {self.name!r}; valid: {sorted(BACKBONES) + sorted(EXTERNAL)}"
            )
        if self.name in EXTERNAL and self.attention is not None:
            raise ValueError(f"{self.name} takes no lungmtl attention: set attention to null")
        if self.encoder is not None and self.name != "smp-unet":
            raise ValueError(f"encoder is an option of smp-unet only, not of {self.name}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; valid: {list(ATTENTIONS)}")
        # Lists from YAML/JSON or a checkpoint become tuples so configs compare and hash.
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "cls_hidden", tuple(int(w) for w in self.cls_hidden))
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive integers, got {self.widths}")
        if self.width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {self.width_mult}")
        if self.seg_classes < 1 or self.in_channels < 1:
            raise ValueError("seg_classes and in_channels must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def channels(self) -> tuple[int, ...]:
        """Filters per level after the width multiplier, the bottleneck last."""
        deep = self.bottleneck if self.bottleneck is not None else self.widths[-1]
        return tuple(max(1, round(w * self.width_mult)) for w in (*self.widths, deep))

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        if self.name == "smp-unet":
            return 32  # five stride-2 stages in smp's encoders
        if self.name == "monai-unet":
            return 16
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown model option(s) {unknown}; valid: {sorted(valid)}")
        return cls(**d)


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
