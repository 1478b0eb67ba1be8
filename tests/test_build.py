"""Building a training set: cache, patient split, balance, duplicates, bad input, CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from lungmtl.cli import main
from lungmtl.data.build import build_dataset
from lungmtl.data.cache import build_cache, open_cache
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


def test_corrupt_file_names_file_and_row_and_leaves_no_partial_cache(phantom, tmp_path):
    table = load_sources([str(phantom)])
    bad = table["image"].iloc[5]
    with open(bad, "r+b") as f:
        f.truncate(40)
    cache_dir = tmp_path / "cache"
    with pytest.raises(InputError, match=r"row 5") as e:
        build_cache(table, CFG, cache_dir, progress=False)
    assert bad in str(e.value)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
    cache = build_cache(table, CFG, cache_dir, skip_bad=True, progress=False)
    skipped = pd.read_csv(cache.root / "skipped.csv")
    assert list(skipped["file"]) == [bad]
    assert len(cache) == len(table) - 1
    assert bad not in set(cache.table["image"])


def test_nan_pixels_are_reported(phantom, tmp_path):
    table = load_sources([str(phantom)])
    path = table["image"].iloc[0]
    arr = np.load(path)
    arr[3, 3] = np.nan
    np.save(path, arr)
    with pytest.raises(InputError, match=r"(?i)nan|finite"):
        build_cache(table, CFG, tmp_path / "cache", progress=False)


def test_duplicates_across_splits_are_found(phantom, tmp_path):
    m = pd.read_csv(phantom / "manifest.csv", keep_default_na=False)
    dup = m.iloc[[0]].copy()
    shutil.copy(phantom / dup["image"].iloc[0], phantom / "images" / "copy.npy")
    dup["image"] = "images/copy.npy"
    dup["patient"] = "someone-else"
    pd.concat([m, dup]).to_csv(phantom / "manifest.csv", index=False)
    found = False
    for seed in range(8):  # the copy lands in another split than its original for some seed
        ds = build_dataset(
            [phantom], CFG, cache_dir=tmp_path / "cache", split_seed=seed, progress=False
        )
        if len(ds.duplicates):
            assert set(ds.duplicates["patient"]) >= {"someone-else"}
            found = True
            break
    assert found


def test_balance_caps_healthy_per_infected(phantom, tmp_path):
    ds = build_dataset(
        [phantom], CFG, cache_dir=tmp_path / "cache", balance_ratio=0.5, progress=False
    )
    for _, part in ds.table.groupby("split"):
        n_inf = (part["label"] == "infected").sum()
        assert (part["label"] == "healthy").sum() <= round(0.5 * n_inf)


@pytest.mark.realdata
def test_build_on_real_data_splits_by_patient(real_data, tmp_path, capsys):
    code = main(
        [
            "data",
            "build",
            "--set",
            f"data.sources=[{real_data}]",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
            "--set",
            "data.max_slices=30",
            "--set",
            "preprocess.size=64",
            "--out",
            str(tmp_path / "split.csv"),
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for src in ("covid-ct-md", "covid19-ct-seg20", "medseg-covid2", "medseg100", "mosmed-mid"):
        assert src in out
    t = pd.read_csv(tmp_path / "split.csv", keep_default_na=False, dtype={"patient": str})
    assert set(t["split"]) == {"train", "val", "test"}
    assert (t.groupby(["source", "patient"])["split"].nunique() == 1).all()
    assert len(t) == 5 * 30


def test_cli_build_stops_on_bad_input_or_skips_and_reports_it(phantom, tmp_path, capsys):
    table = load_sources([str(phantom)])
    bad = table["image"].iloc[2]
    with open(bad, "r+b") as f:
        f.truncate(30)
    args = [
        "data",
        "build",
        "--set",
        f"data.sources=[{phantom}]",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--set",
        "preprocess.size=32",
        "-q",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert bad in err and "row 2" in err
    assert main([*args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad slice(s)" in out
