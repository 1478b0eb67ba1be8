"""Building a training set: patient split, balance, duplicates, bad input, CLI."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from lungmtl.cli import main
from lungmtl.data.build import assign_splits, build_dataset
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.data.sources import load_sources
from lungmtl.data.split import assert_patient_disjoint
from lungmtl.errors import InputError

CFG = PreprocessConfig(size=64)


@pytest.fixture
def phantom(tmp_path):
    return write_phantom_dataset(tmp_path / "data", n_patients=6, n_slices=4, size=64, seed=2)


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


@pytest.mark.slow
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
    assert bad in err and "row 3" in err  # manifest rows count from 1
    assert main([*args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad slice(s)" in out


def test_a_published_split_is_kept_when_asked_and_ignored_with_a_warning_otherwise():
    rows = []
    for k in range(10):  # source "pub": patients 0-2 published test, 3-9 published train
        for _ in range(3):
            rows.append(
                ("pub", f"a{k}", "infected" if k % 2 else "healthy", "test" if k < 3 else "train")
            )
    for k in range(10):  # source "free": no published split
        for _ in range(3):
            rows.append(("free", f"b{k}", "infected" if k % 2 else "healthy", ""))
    table = pd.DataFrame(rows, columns=["source", "patient", "label", "split"])
    with pytest.warns(UserWarning, match=r"\{'pub': 30\} publish a train/test split"):
        anew = assign_splits(table, (0.6, 0.2, 0.2), 0)
    assert set(anew[table["source"] == "pub"]) == {"train", "val", "test"}
    kept = pd.Series(assign_splits(table, (0.6, 0.2, 0.2), 0, published=True), index=table.index)
    pub = table["source"] == "pub"
    assert (kept[pub & (table["split"] == "test")] == "test").all()
    assert set(kept[pub & (table["split"] == "train")]) == {"train", "val"}  # never test
    assert set(kept[~pub]) == {"train", "val", "test"}
    assert_patient_disjoint(table.assign(split=kept))
    with pytest.raises(InputError, match=r"unknown published split names \['holdout'\]"):
        assign_splits(table.assign(split="holdout"), (0.6, 0.2, 0.2), 0, published=True)
    mixed = table.copy()
    mixed.loc[0, "split"] = "train"  # one slice of test patient a0 published as train
    with pytest.raises(InputError, match="more than one published split"):
        assign_splits(mixed, (0.6, 0.2, 0.2), 0, published=True)
