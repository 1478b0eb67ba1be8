"""What every model shares: the output type, the encoder contract, the config, and the registry.

The networks (:mod:`lungmtl.models.multitask`, :mod:`lungmtl.models.external`) import this
module and add their entries to :data:`MODELS`; this module imports none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .blocks import ATTENTIONS


class MultiTaskOutput(NamedTuple):
    """What every model returns.

    Shape:
        seg: (N, seg_classes, H, W) segmentation logits.
        cls: (N, 2) classification logits (index 1 = infected).
    """

    seg: torch.Tensor
    cls: torch.Tensor


class Encoder(nn.Module):
    """The encoder contract: ``forward(x)`` returns ``len(out_channels)`` maps, the i-th at
    stride 2**i; decoders and heads read only this."""

    out_channels: tuple[int, ...]


@dataclass(frozen=True)
class ModelEntry:
    """One model name: how to build it and what its config may hold.

    Args:
        build: ``ModelConfig -> nn.Module`` returning :class:`MultiTaskOutput`.
        divisor: input sides must be multiples of it; ``None`` = 2 per encoder level.
        attention: takes lungmtl's attention option (``"cbam"``).
        options: the optional ``ModelConfig`` fields it reads (e.g. ``encoder``).
        extra: pip extra of the optional library it needs (an ecosystem baseline); ``None`` for
            lungmtl's own networks.
        module: the module of that library, imported when the model is built.
    """

    build: Callable[[ModelConfig], nn.Module]
    divisor: int | None = None
    attention: bool = True
    options: tuple[str, ...] = ()
    extra: str | None = None
    module: str | None = None

    @property
    def external(self) -> bool:
        """An ecosystem baseline (its library is an optional extra)."""
        return self.extra is not None


#: The one model registry, name -> entry; filled by the modules that define the networks
#: (imported by ``lungmtl.models``).
MODELS: dict[str, ModelEntry] = {}
#: ``ModelConfig`` fields that only some models read (``ModelEntry.options``).
OPTIONAL_FIELDS = ("encoder",)


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that fully define a network; saved inside every checkpoint.

    Args:
        name: a name of :data:`MODELS`: lungmtl's backbones (unet, unetpp, resunet) or an
            ecosystem baseline of :mod:`lungmtl.models.external` (smp-unet, monai-unet; extras).
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
        entry = MODELS.get(self.name)
        if entry is None:
            valid = sorted(MODELS, key=lambda n: (MODELS[n].external, n))
            raise ValueError(f"unknown model {self.name!r}; valid: {valid}")
        if self.attention is not None and not entry.attention:
            raise ValueError(f"{self.name} takes no lungmtl attention: set attention to null")
        for option in OPTIONAL_FIELDS:
            if getattr(self, option) is not None and option not in entry.options:
                takers = ", ".join(n for n, e in MODELS.items() if option in e.options)
                raise ValueError(f"{option} is an option of {takers} only, not of {self.name}")
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
        return MODELS[self.name].divisor or 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown model option(s) {unknown}; valid: {sorted(valid)}")
        return cls(**d)


def build_model(config: ModelConfig) -> nn.Module:
    """The network a ``ModelConfig`` describes (lungmtl's own, or an ecosystem baseline)."""
    return MODELS[config.name].build(config)


def create_model(name: str = "unet", **config) -> nn.Module:
    """Build a model by name; every option is a ``ModelConfig`` field.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).
        ImportError: an external baseline whose library is not installed (names the extra).
    """
    return build_model(ModelConfig.from_dict({"name": name, **config}))
