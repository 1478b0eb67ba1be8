"""Which slices evaluate() scores: the run's recorded split (lungmtl.evaluation.select)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from training_helpers import tiny_config

from lungmtl.data.build import build_from_config
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.evaluation import evaluate
from lungmtl.training import fit


@pytest.mark.slow
def test_evaluate_reads_the_recorded_split_after_the_data_grew(tmp_path):
    """Patients added to a source after training reshuffle a redrawn split; evaluate's test
    split is the one recorded in split.csv, so it never holds a training patient."""
    data = write_phantom_dataset(tmp_path / "d", n_patients=8, n_slices=4, size=64, seed=1)
    cfg = tiny_config([data], tmp_path / "c", **{"train.epochs": 1})
    fit(cfg, tmp_path / "run", progress=False)
    recorded = pd.read_csv(tmp_path / "run" / "split.csv", dtype={"patient": str})
    trained = set(recorded.loc[recorded["split"] != "test", "patient"])
    tested = set(recorded.loc[recorded["split"] == "test", "patient"])
    write_phantom_dataset(tmp_path / "d", n_patients=14, n_slices=4, size=64, seed=1)
    redrawn = build_from_config(cfg, progress=False).table
    assert set(redrawn.loc[redrawn["split"] == "test", "patient"]) & trained  # would leak
    evaluate(tmp_path / "run", tmp_path / "e", progress=False, n_boot=10)
    evaluated = pd.read_csv(tmp_path / "e" / "predictions.csv", dtype={"patient": str})
    assert set(evaluated["patient"]) == tested
    # a recorded test slice that has left the data: evaluated without it, with a warning
    gone = Path(evaluated["image"].iloc[0]).name
    manifest = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    keep = manifest["image"].map(lambda p: Path(p).name) != gone
    manifest[keep].to_csv(data / "manifest.csv", index=False)
    with pytest.warns(UserWarning, match="1 of the .* 'test' slices it records are no longer"):
        m = evaluate(tmp_path / "run", tmp_path / "e2", progress=False, n_boot=10)
    assert m["n_slices"] == len(evaluated) - 1
