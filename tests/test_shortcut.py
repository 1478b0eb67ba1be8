"""Shortcut checks: a source told apart by an intensity offset, and within-source accuracy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lungmtl.cli import main
from lungmtl.data.cache import build_cache
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.data.sources import load_sources
from lungmtl.errors import InputError
from lungmtl.shortcut import source_classifier_check, within_source_check

PRE = PreprocessConfig(size=32)


def two_sources(root, offset_hu: float):
    """Two phantom sources drawn alike; the second shifted by ``offset_hu`` everywhere."""
    a = write_phantom_dataset(root / "site-a", n_patients=8, n_slices=5, size=48, seed=11)
    b = write_phantom_dataset(root / "site-b", n_patients=8, n_slices=5, size=48, seed=12)
    if offset_hu:
        for f in (b / "images").glob("*.npy"):
            np.save(f, np.load(f) + np.float32(offset_hu))
    return a, b


def check(root, offset_hu: float) -> dict:
    a, b = two_sources(root, offset_hu)
    cache = build_cache(load_sources([a, b]), PRE, root / "cache", progress=False)
    return source_classifier_check(cache)


def test_offset_source_is_detected(tmp_path):
    # 300 HU survives the lung-level normalisation only in part (it rescales the intensities),
    # so the bar is "well above chance", not perfect
    r = check(tmp_path, offset_hu=300.0)
    assert r["n_sources"] == 2 and r["chance_balanced"] == 0.5
    assert r["balanced_accuracy"] > 0.8, r
    assert all(b["recall"] > 0.7 for b in r["per_source"].values())


def test_identical_sources_are_near_chance(tmp_path):
    r = check(tmp_path, offset_hu=0.0)
    assert r["balanced_accuracy"] < 0.7, r
    # both sources hold both labels in the same proportions: the source says nothing
    assert r["label_from_source_accuracy"] == pytest.approx(r["label_majority_accuracy"], abs=0.2)


def fake_predictions(path) -> pd.DataFrame:
    """Sources A and B hold one class each (called right); M holds both (called at random)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        rows.append(("A", "a1", "infected", 0.9))
        rows.append(("B", "b1", "healthy", 0.1))
        patient = "m1" if i < 10 else "m2"
        rows.append(("M", patient, "infected" if i % 2 else "healthy", rng.random()))
    frame = pd.DataFrame(rows, columns=["source", "patient", "label", "p_infected"])
    frame.to_csv(path / "predictions.csv", index=False)
    return frame


def test_within_source_accuracy(tmp_path):
    frame = fake_predictions(tmp_path)
    r = within_source_check(tmp_path, sources=("M", "covid-ct-md"))
    m = frame[frame["source"] == "M"]
    correct = (m["p_infected"] >= 0.5) == (m["label"] == "infected")
    assert r["per_source"]["M"]["accuracy"] == pytest.approx(correct.mean())
    assert r["mixed_pooled"]["accuracy"] == pytest.approx(correct.mean())
    overall = ((frame["p_infected"] >= 0.5) == (frame["label"] == "infected")).mean()
    assert r["overall"]["accuracy"] == pytest.approx(overall)
    assert set(r["within_patient"]) == {"m1", "m2"}
    assert "A" not in r["per_source"]  # one class, not named: not reported
    assert r["missing"] == ["covid-ct-md"]


def test_cli_writes_report(tmp_path):
    fake_predictions(tmp_path)
    out = tmp_path / "out"
    assert main(["shortcut", "--eval", str(tmp_path), "--out", str(out), "-q"]) == 0
    md = (out / "shortcut.md").read_text()
    assert "source M (both)" in md and "patient m1" in md
    data = json.loads((out / "shortcut.json").read_text())
    assert data["source_classifier"] is None
    assert data["within_source"]["overall"]["n"] == 60


def test_missing_predictions_fail_clearly(tmp_path):
    with pytest.raises(InputError, match=r"predictions\.csv"):
        within_source_check(tmp_path)
