"""What every model shares: the output it returns and the config that defines it.

The networks (:mod:`lungmtl.models.multitask`, :mod:`lungmtl.models.external`) import these;
this module imports none of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .blocks import ATTENTIONS

#: lungmtl's own backbones (built by :data:`lungmtl.models.multitask.BACKBONES`).
BACKBONE_NAMES = ("unet", "unetpp", "resunet")
#: Ecosystem baselines (:mod:`lungmtl.models.external`): name -> (pip extra, module to import).
EXTERNAL = {"smp-unet": ("smp", "segmentation_models_pytorch"), "monai-unet": ("monai", "monai")}


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
        name: backbone, one of ``BACKBONE_NAMES`` (unet, unetpp, resunet), or an ecosystem baseline
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
        if self.name not in BACKBONE_NAMES and self.name not in EXTERNAL:
            raise ValueError(
                f"unknown model {self.name!r}; valid: {sorted(BACKBONE_NAMES) + sorted(EXTERNAL)}"
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
