"""Models: blocks, encoders, decoders, heads, the multi-task net, and checkpoints."""

from .base import ModelConfig, MultiTaskOutput
from .checkpoint import load, read, save
from .multitask import (
    BACKBONES,
    MultiTaskNet,
    build_model,
    count_parameters,
    create_model,
    pad_to_multiple,
)

__all__ = [
    "BACKBONES",
    "ModelConfig",
    "MultiTaskNet",
    "MultiTaskOutput",
    "build_model",
    "count_parameters",
    "create_model",
    "load",
    "pad_to_multiple",
    "read",
    "save",
]
