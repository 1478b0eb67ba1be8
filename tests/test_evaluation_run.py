"""evaluate() on new data (lungmtl.evaluation.run)."""

from __future__ import annotations

import json

import pytest
from training_helpers import tiny_config

from lungmtl.cli import main
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.training import fit


@pytest.mark.slow
def test_evaluate_new_data_skips_and_reports_unreadable_slices(phantom, tmp_path, capsys):
    fit(
        tiny_config([phantom], tmp_path / "c", **{"train.epochs": 1}),
        tmp_path / "run",
        progress=False,
    )
    other = write_phantom_dataset(tmp_path / "other", n_patients=3, n_slices=4, size=64, seed=9)
    bad = sorted((other / "images").glob("*.npy"))[1]
    bad.write_bytes(b"\x93NUMPY broken")
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "run"),
            "--data",
            str(other),
            "--out",
            str(tmp_path / "e"),
            "-q",
        ]
    )
    assert code == 0
    assert "skipped 1 unreadable slice(s)" in capsys.readouterr().out
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["skipped_slices"] == 1 and m["n_slices"] == 11
    assert str(bad) in (tmp_path / "e" / "skipped.csv").read_text()
