"""Checkpoints: model config + weights (+ optional extras), saved atomically, loaded safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import atomic_path
from .base import ModelConfig, build_model
from .ensemble import Ensemble
from .shipped import SHIPPED, shipped_path

FORMAT = "lungmtl-checkpoint"
VERSION = 1
#: File names looked up, in order, when a run directory is given instead of a file.
RUN_FILES = ("best.pt", "last.pt")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`lungmtl.files.atomic_path`: a crash or Ctrl-C leaves
    either the old file or the new one, never a half-written one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


class Restored(NamedTuple):
    """A checkpoint read once: the model (eval mode), its config, and every other entry
    (``run_config``, ``epoch``, ``metrics``, ``scan_rule``, ... as saved) in ``meta``."""

    model: nn.Module
    config: ModelConfig
    meta: dict[str, Any]
    path: Path


def save(model: nn.Module, path: str | Path, *, half: bool = False, **extra: Any) -> Path:
    """Save a model's config and weights; ``extra`` entries (plain data/tensors) ride along.

    An :class:`Ensemble` also records its size and test-time flips (key ``ensemble``).
    ``half`` stores floating-point tensors in float16 (half the size; loading casts them back).
    """
    if isinstance(model, Ensemble):
        extra["ensemble"] = {"members": len(model.members), "flips": list(model.flips)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": state,
        **extra,
    }
    return atomic_torch_save(payload, path)


def resolve(path: str | Path) -> Path:
    """A checkpoint file, a run directory holding ``best.pt`` / ``last.pt``, or the name of a
    shipped model (``lungmtl models``; its checksum is verified)."""
    if str(path) in SHIPPED and not Path(path).exists():
        return shipped_path(str(path))
    path = Path(path)
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(path, f"no checkpoint in this folder (looked for {list(RUN_FILES)})")
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    return path


def read(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict safely (``weights_only=True``) and check it is lungmtl's."""
    path = resolve(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with forbidden globals, not a torch file...
        raise CheckpointError(
            path, f"unreadable or truncated checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(path, "not a lungmtl checkpoint (missing format marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(path, f"written by a newer lungmtl (version {ckpt['version']})")
    return ckpt


def restore(path: str | Path, map_location: str | torch.device = "cpu") -> Restored:
    """Read a checkpoint once and rebuild its model (config + weights, eval mode)."""
    path = resolve(path)
    ckpt = read(path, map_location)
    try:
        config = ModelConfig.from_dict(ckpt["model_config"])
        ens = ckpt.get("ensemble")
        if ens:
            members = [build_model(config) for _ in range(int(ens["members"]))]
            model = Ensemble(members, ens.get("flips", ()))
        else:
            model = build_model(config)
        model.load_state_dict(ckpt["state_dict"])
    except ImportError as e:  # an external baseline whose library is not installed here
        raise CheckpointError(path, str(e)) from None
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(path, f"inconsistent checkpoint: {e}") from None
    meta = {k: v for k, v in ckpt.items() if k not in ("model_config", "state_dict")}
    return Restored(model.eval(), config, meta, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of a checkpoint alone (:func:`restore` without the rest)."""
    return restore(path, map_location).model


def split_record(path: str | Path, meta: dict[str, Any] | None = None):
    """The patient split a checkpoint was trained on (source, patient, image, index, split): the
    record a shipped model carries (its held-out slices), else its run's ``split.csv``."""
    import pandas as pd

    path = resolve(path)
    meta = read(path) if meta is None else meta
    if meta.get("split_record") is not None:
        return pd.DataFrame(meta["split_record"], dtype=str)
    csv = path.parent / "split.csv"
    if not csv.exists():
        raise CheckpointError(path, f"no split recorded (no split_record, no {csv})")
    return pd.read_csv(csv, dtype=str, keep_default_na=False)
