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


@pytest.mark.slow
def test_crf_and_lung_only_evaluations_run_and_change_only_the_masks(phantom, tmp_path):
    """`evaluate --crf` / `--lung-only` post-process the masks: classification stays the same."""
    from lungmtl.evaluation import evaluate

    fit(
        tiny_config([phantom], tmp_path / "c", **{"train.epochs": 1}),
        tmp_path / "run",
        progress=False,
    )
    plain = evaluate(tmp_path / "run", tmp_path / "plain", progress=False)
    crf = evaluate(tmp_path / "run", tmp_path / "crf", progress=False, crf=True)
    lung = evaluate(tmp_path / "run", tmp_path / "lung", progress=False, lung_only=True)
    assert crf["crf"] is True and lung["lung_only"] is True and plain["crf"] is False
    for m in (crf, lung):
        assert m["n_slices"] == plain["n_slices"] and m["auc"] == plain["auc"]
        assert (tmp_path / ("crf" if m is crf else "lung") / "report.md").exists()
