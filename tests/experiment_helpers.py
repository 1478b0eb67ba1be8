"""Helpers shared by the experiment, stats and compare tests: a tiny run config, an experiment
YAML writer, a predictions.csv table."""

from __future__ import annotations

import pandas as pd
import yaml


def tiny_base(path, sources, cache) -> str:
    """A tiny, fast run config (32 px, width 0.125, 2 steps) written to ``path``."""
    cfg = {
        "data": {"sources": [str(s) for s in sources], "cache_dir": str(cache)},
        "preprocess": {"size": 32},
        "model": {"width_mult": 0.125, "cls_hidden": [16, 8]},
        "augment": {"enabled": False},
        "optim": {"lr": 0.003},
        "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2},
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def write_yaml(path, **spec) -> str:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def predictions(root: str, dice, correct, patients=("p1",), source="src") -> pd.DataFrame:
    """A predictions.csv table: slices 0..n-1 of ``img.nii.gz`` under ``root/patient``."""
    n = len(dice)
    pats = [patients[i * len(patients) // n] for i in range(n)]
    return pd.DataFrame(
        {
            "image": [f"{root}/{source}/{p}/img.nii.gz" for p in pats],
            "index": range(n),
            "source": source,
            "patient": pats,
            "dice": dice,
            "correct": correct,
        }
    )
