"""Which slices an evaluation scores: new data, or the run's recorded held-out split."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..data.build import build_from_config
from ..data.cache import build_cache
from ..data.sources import load_sources
from ..data.split import slice_keys
from ..errors import InputError


def select_rows(
    checkpoint_path: Path,
    ck: dict,
    data: list[str] | None,
    split: str,
    cfg: RunConfig,
    cache_dir: str | None,
    progress: bool,
):
    """The cache and rows to evaluate: new data, or a split of the run's own data."""
    if data:
        table = load_sources(data)
        cache = build_cache(
            table, cfg.preprocess, cache_dir or cfg.data.cache_dir, skip_bad=True, progress=progress
        )
        return cache, np.arange(len(cache))
    if cache_dir:
        cfg.data.cache_dir = cache_dir
    ds = build_from_config(cfg, progress)
    recorded = checkpoint_path.parent / "split.csv"
    if ck.get("split_record") is not None:  # a shipped model carries its held-out slices
        record = pd.DataFrame(ck["split_record"], dtype=str)
        rows = recorded_rows(ds.cache.table, record, split, checkpoint_path)
    elif recorded.exists():
        rows = recorded_rows(ds.cache.table, recorded, split)
    else:
        warnings.warn(
            f"{recorded} is missing: evaluating the {split!r} split drawn again from the run's "
            "sources, which holds the training patients out only if the data are unchanged",
            stacklevel=3,
        )
        rows = ds.rows(split)
    if not len(rows):
        raise InputError(checkpoint_path, f"the run's {split!r} split is empty")
    return ds.cache, rows


def recorded_rows(
    cache_table: pd.DataFrame,
    split_csv: Path | pd.DataFrame,
    split: str,
    where: Path | None = None,
) -> np.ndarray:
    """The cache rows of the slices that ``split_csv`` (written by ``fit``) put in ``split``.

    The split is read back rather than drawn again: a scan added to a source since training
    reshuffles the patients, and a redrawn test split could then hold training patients. Slices
    of the recorded split that the data no longer hold are left out with a warning."""
    if isinstance(split_csv, pd.DataFrame):
        rec, split_csv = split_csv, where or "split record"
    else:
        try:
            rec = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as e:
            raise InputError(split_csv, f"unreadable split record: {e}") from e
    missing_cols = {"image", "index", "patient", "source", "split"} - set(rec.columns)
    if missing_cols:
        raise InputError(split_csv, f"not a split record: no {sorted(missing_cols)} column")
    wanted = set(slice_keys(rec[rec["split"] == split]))
    keys = slice_keys(cache_table)
    rows = np.flatnonzero(keys.isin(wanted).to_numpy())
    lost = len(wanted) - len(set(keys.iloc[rows]))
    if lost:
        warnings.warn(
            f"{split_csv}: {lost} of the {len(wanted)} {split!r} slices it records are no "
            "longer in the run's sources; evaluating the rest",
            stacklevel=3,
        )
    return rows
