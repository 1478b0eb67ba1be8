"""Device selection and the CUDA fast path (bf16 autocast, channels_last)."""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise InputError(
            "device", f"{name!r} is not a device: use auto, cpu, cuda or cuda:N ({e})"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device", f"{name!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError("device", f"{name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU (correctness first there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to the device; channels_last memory format on CUDA (faster convolutions)."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=device.type == "cuda")
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x
