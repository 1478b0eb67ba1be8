"""Build a training set: sources -> slice table -> cache -> patient split -> balance -> summary."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import InputError
from .cache import SliceCache, build_cache
from .preprocess import PreprocessConfig
from .sources import load_sources
from .split import SPLITS, assert_patient_disjoint, split_by_patient

if TYPE_CHECKING:  # a type only: data/ does not import config (and through it models/) at run time
    from ..config import RunConfig


@dataclass
class BuiltDataset:
    """A cache plus the split of each of its rows (rows dropped by balancing are absent).

    ``table`` is ``cache.table`` restricted to the kept rows, with a ``split`` column and
    ``row`` = the row in the cache arrays.
    """

    cache: SliceCache
    table: pd.DataFrame
    duplicates: pd.DataFrame

    def rows(self, split: str) -> np.ndarray:
        return self.table.loc[self.table["split"] == split, "row"].to_numpy()

    def summary(self) -> pd.DataFrame:
        return summary_table(self.table)


def _cap(table: pd.DataFrame, max_slices: int | None) -> pd.DataFrame:
    """At most ``max_slices`` rows per source, evenly spaced (keeps every patient represented)."""
    if max_slices is None:
        return table
    parts = []
    for _, part in table.groupby("source", sort=False):
        if len(part) > max_slices:
            part = part.iloc[np.linspace(0, len(part) - 1, max_slices).round().astype(int)]
        parts.append(part)
    return pd.concat(parts)


def balance(table: pd.DataFrame, ratio: float, seed: int = 0) -> pd.DataFrame:
    """Keep at most ``ratio`` healthy slices per infected slice in each split (random, seeded)."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, part in table.groupby("split", sort=True):
        inf = part[part["label"] == "infected"]
        healthy = part[part["label"] == "healthy"]
        n = min(len(healthy), round(ratio * len(inf)))
        keep += [inf, healthy.iloc[np.sort(rng.choice(len(healthy), n, replace=False))]]
    return pd.concat(keep).sort_values("row")


def find_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """Identical pre-processed images in different splits (by content hash)."""
    groups = table.groupby("image_hash")["split"].nunique()
    dup = table[table["image_hash"].isin(groups[groups > 1].index)]
    return dup[["image_hash", "split", "source", "patient", "image"]].sort_values("image_hash")


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Table-2-style counts: per source and split, infected / healthy slices and patients."""
    g = table.groupby(["source", "split"])
    out = pd.DataFrame(
        {
            "infected": g["label"].apply(lambda s: int((s == "infected").sum())),
            "healthy": g["label"].apply(lambda s: int((s == "healthy").sum())),
            "with_mask": g["has_mask"].sum().astype(int),
            "patients": g["patient"].nunique(),
        }
    ).reset_index()
    total = (
        out.groupby("split")[["infected", "healthy", "with_mask", "patients"]].sum().reset_index()
    )
    total.insert(0, "source", "ALL")
    out = pd.concat([out, total], ignore_index=True)
    out["split"] = pd.Categorical(out["split"], SPLITS, ordered=True)
    return out.sort_values(["source", "split"]).reset_index(drop=True)


def assign_splits(
    table: pd.DataFrame,
    fractions: tuple[float, float, float],
    seed: int,
    *,
    published: bool = False,
) -> np.ndarray:
    """Each row's split: dealt by patient (:func:`split_by_patient`), or, with ``published``,
    the split a source publishes in its ``split`` column where it gives one.

    Published ``test`` (and ``val``) rows keep their split; published ``train`` patients are
    dealt into train and validation in the ratio of ``fractions``; rows without a published
    split are dealt as usual. Without ``published`` a published split is ignored, with a
    warning, so the default split stays the same on every source.
    """
    given = table["split"].fillna("").astype(str).str.strip().str.lower()
    if not published:
        if given.astype(bool).any():
            counts = table.loc[given != "", "source"].value_counts().to_dict()
            warnings.warn(
                f"sources {counts} publish a train/test split (manifest column 'split'); it is "
                "ignored and patients are split anew: set data.published_split=true to use it",
                stacklevel=3,
            )
        return split_by_patient(table, fractions, seed).to_numpy()
    unknown = sorted(set(given) - {"", *SPLITS})
    if unknown:
        raise InputError("data.published_split", f"unknown published split names {unknown}")
    mixed = table.assign(given=given).groupby(["source", "patient"])["given"].nunique()
    if (mixed > 1).any():
        raise InputError(
            "data.published_split",
            f"patients in more than one published split: {list(mixed[mixed > 1].index[:5])}",
        )
    out = given.to_numpy(dtype=object).copy()
    fr = np.asarray(fractions, dtype=float)
    rest = given == ""
    if rest.any():
        out[rest.to_numpy()] = split_by_patient(table[rest], fractions, seed).to_numpy()
    train = given == "train"
    if train.any() and fr[:2].sum() > 0:
        ratio = (fr[0] / fr[:2].sum(), fr[1] / fr[:2].sum(), 0.0)
        out[train.to_numpy()] = split_by_patient(table[train], ratio, seed).to_numpy()
    return out.astype(str)


def check_split_filled(
    table: pd.DataFrame, splits: np.ndarray, fractions: tuple[float, float, float], *, warn=False
) -> None:
    """Refuse a split that leaves train or val without patients (training needs both); warn
    (with ``warn``) where a test share > 0 got none.

    Raises:
        InputError: naming ``data.split``, with the patients each split needs and has.
    """
    keys = table["source"].astype(str) + "\0" + table["patient"].astype(str)
    has = {s: int(keys[splits == s].nunique()) for s in SPLITS}
    empty = [s for s, f in zip(SPLITS, fractions, strict=True) if f > 0 and has[s] == 0]
    if not empty:
        return
    counts = ", ".join(f"{s} {has[s]}" for s in SPLITS)
    problem = (
        f"{list(fractions)} over {keys.nunique()} patient(s) leaves {' and '.join(empty)} "
        f"without patients (patients per split: {counts}); every split with a share > 0 needs "
        "at least 1 patient, so add patients or change data.split"
    )
    if set(empty) & {"train", "val"}:
        raise InputError("data.split", problem)
    if warn:
        warnings.warn(f"data.split: {problem}", stacklevel=3)


def build_dataset(
    sources: list[str | Path],
    preprocess: PreprocessConfig,
    *,
    cache_dir: str | Path = "~/.cache/lungmtl",
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    split_seed: int = 0,
    balance_ratio: float | None = None,
    study_labels: bool = True,
    max_slices: int | None = None,
    skip_bad: bool = False,
    published_split: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> BuiltDataset:
    """Everything ``lungmtl data build`` does, as a function (options: see ``DataConfig``)."""
    table = load_sources([str(s) for s in sources], check_files=not skip_bad)
    # Each row's number in its own source (its manifest row), for messages about bad slices.
    source_row = table.groupby("source", sort=False).cumcount() + 1
    if not study_labels:
        table = table[table["label_level"] != "study"]
    table = _cap(table, max_slices)
    with warnings.catch_warnings():  # a dry run of the split, before any slice is read
        warnings.simplefilter("ignore")
        check_split_filled(
            table, assign_splits(table, split, split_seed, published=published_split), split
        )
    cache = build_cache(
        table,
        preprocess,
        cache_dir,
        skip_bad=skip_bad,
        workers=workers,
        progress=progress,
        rows=source_row.loc[table.index].to_numpy(),
    )
    t = cache.table.copy()
    t["row"] = np.arange(len(t))
    t["split"] = assign_splits(t, split, split_seed, published=published_split)
    check_split_filled(t, t["split"].to_numpy(), split, warn=True)
    if balance_ratio is not None:
        t = balance(t, balance_ratio, split_seed)
    assert_patient_disjoint(t)
    return BuiltDataset(cache=cache, table=t.reset_index(drop=True), duplicates=find_duplicates(t))


def build_from_config(cfg: RunConfig, progress: bool = True) -> BuiltDataset:
    """The dataset a run config describes: its sources, pre-processing, split and balance."""
    d = cfg.data
    return build_dataset(
        d.sources,
        cfg.preprocess,
        cache_dir=d.cache_dir,
        split=d.split,
        split_seed=d.split_seed,
        balance_ratio=d.balance,
        study_labels=d.study_labels,
        max_slices=d.max_slices,
        skip_bad=d.skip_bad,
        published_split=d.published_split,
        workers=max(1, cfg.train.num_workers),
        progress=progress,
    )
