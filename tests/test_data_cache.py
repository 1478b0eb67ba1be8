"""Tests for lungmtl.data.cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungmtl.data.cache import build_cache, cache_key, open_cache
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.data.sources import load_sources
from lungmtl.errors import InputError

CFG = PreprocessConfig(size=64)


@pytest.fixture
def phantom(tmp_path):
    return write_phantom_dataset(tmp_path / "data", n_patients=6, n_slices=4, size=64, seed=2)


def test_cache_is_built_once_and_reused(phantom, tmp_path):
    table = load_sources([str(phantom)])
    a = build_cache(table, CFG, tmp_path / "cache", progress=False)
    stamp = (a.root / "images.npy").stat().st_mtime_ns
    b = build_cache(table, CFG, tmp_path / "cache", progress=False)
    assert b.root == a.root and (b.root / "images.npy").stat().st_mtime_ns == stamp
    assert a.images.shape == (len(table), 64, 64) and a.images.dtype == np.float16
    assert set(np.unique(a.masks)) <= {0, 1}
    # another pre-processing config is another cache
    c = build_cache(
        table, PreprocessConfig(size=64, enhance=()), tmp_path / "cache", progress=False
    )
    assert c.root != a.root
    assert not np.array_equal(np.asarray(c.images), np.asarray(a.images))
    again = open_cache(a.root)
    assert again.config == CFG and len(again) == len(table)


@pytest.mark.parametrize("column", ["image", "mask", "mask_multiclass", "lung_mask"])
def test_an_edited_input_file_gives_a_new_cache(phantom, tmp_path, column):
    """Editing any file a slice is read from (the 0/1/2 mask too) rebuilds the cache."""
    table = load_sources([str(phantom)])
    before = cache_key(table, CFG)
    path = next(p for p in table[column].astype(str) if p)
    with open(path, "ab") as f:  # a re-saved file: new size and time
        f.write(b"\0")
    assert cache_key(table, CFG) != before


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_file_names_file_and_row_and_leaves_no_partial_cache(phantom, tmp_path, workers):
    """The same with worker processes: the error crosses the process boundary intact."""
    table = load_sources([str(phantom)])
    bad = table["image"].iloc[5]
    with open(bad, "r+b") as f:
        f.truncate(40)
    cache_dir = tmp_path / "cache"
    with pytest.raises(InputError, match=r"row 6") as e:  # data row 6 of the manifest
        build_cache(table, CFG, cache_dir, workers=workers, progress=False)
    assert bad in str(e.value)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
    cache = build_cache(table, CFG, cache_dir, skip_bad=True, workers=workers, progress=False)
    skipped = pd.read_csv(cache.root / "skipped.csv")
    assert list(skipped["file"]) == [bad]
    assert len(cache) == len(table) - 1
    assert bad not in set(cache.table["image"])
    # The same inputs again without skip_bad: the cache that skipped it is not quietly reused.
    with pytest.raises(InputError, match=r"row 6.*1 unreadable slice.*skipped\.csv"):
        build_cache(table, CFG, cache_dir, workers=workers, progress=False)


def test_nan_pixels_are_reported(phantom, tmp_path):
    table = load_sources([str(phantom)])
    path = table["image"].iloc[0]
    arr = np.load(path)
    arr[3, 3] = np.nan
    np.save(path, arr)
    with pytest.raises(InputError, match=r"(?i)nan|finite"):
        build_cache(table, CFG, tmp_path / "cache", progress=False)
