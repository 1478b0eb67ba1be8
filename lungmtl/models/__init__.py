"""Models: blocks, encoders, decoders, heads, the networks, one registry, and checkpoints."""

from .base import MODELS, ModelConfig, ModelEntry, MultiTaskOutput, build_model, create_model
from .checkpoint import Restored, load, read, restore, save
from .external import ExternalNet
from .multitask import MultiTaskNet, count_parameters, pad_to_multiple

__all__ = [
    "MODELS",
    "ExternalNet",
    "ModelConfig",
    "ModelEntry",
    "MultiTaskNet",
    "MultiTaskOutput",
    "Restored",
    "build_model",
    "count_parameters",
    "create_model",
    "load",
    "pad_to_multiple",
    "read",
    "restore",
    "save",
]
