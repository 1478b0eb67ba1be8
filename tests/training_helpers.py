"""Shared by the training and evaluation tests: a tiny run config."""

from __future__ import annotations

from lungmtl.config import load_config


def tiny_config(sources, cache, **over):
    sets = [
        f"data.sources={[str(s) for s in sources]}",
        f"data.cache_dir={cache}",
        "preprocess.size=64",
        "model.width_mult=0.125",
        "model.cls_hidden=[32, 16]",
        "train.batch_size=8",
        "train.epochs=2",
        "optim.lr=0.003",
    ]
    return load_config(overrides=sets + [f"{k}={v}" for k, v in over.items()])
