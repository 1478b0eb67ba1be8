"""compare.py: pairing two evaluations slice by slice, the paired tests, the Markdown table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import predictions
from scipy import stats

from lungmtl.cli import main
from lungmtl.compare import compare
from lungmtl.errors import InputError


def write_eval(folder, table: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "predictions.csv", index=False)
    return folder


DICE_A = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6]
DICE_B = [0.7, 0.65, 0.8, 0.6, 0.85, 0.45]
RIGHT_A = [True, True, True, False, True, True]
RIGHT_B = [False, False, True, False, False, True]


def test_compare_writes_a_table_against_the_baseline(tmp_path, capsys):
    base = write_eval(tmp_path / "base", predictions("/data", DICE_B, RIGHT_B))
    better = write_eval(tmp_path / "better", predictions("/moved", DICE_A, RIGHT_A))
    same = write_eval(tmp_path / "same", predictions("/data", DICE_B, RIGHT_B))
    text = compare([base, better, same])
    lines = text.splitlines()
    assert lines[0].startswith(f"Baseline: `{base}`; paired two-sided tests, alpha = 0.05.")
    rows = [ln for ln in lines if ln.startswith("| `")]
    assert len(rows) == 2 and rows[0].startswith(f"| `{better}` | 6 | 0.8000 | 0.6750 |")
    assert rows[0].endswith("| 3/0 | 0.2500 | yes |")  # Dice p = 0.0021
    assert rows[1].endswith("| 0/0 | 1.0000 | no |") and "| n/a |" in rows[1]
    out = tmp_path / "table.md"
    assert main(["compare", str(base), str(better), "--alpha", "0.001", "--out", str(out)]) == 0
    assert "alpha = 0.001" in capsys.readouterr().out
    assert out.read_text().rstrip().endswith("| no |")  # p = 0.0021 > 0.001


def test_compare_refuses_what_it_cannot_pair(tmp_path):
    base = write_eval(tmp_path / "base", predictions("/data", DICE_B, RIGHT_B))
    with pytest.raises(InputError, match="at least two"):
        compare([base])
    with pytest.raises(InputError, match="lungmtl evaluate"):
        compare([base, tmp_path / "nothing"])
    fewer = write_eval(tmp_path / "fewer", predictions("/data", DICE_A[:4], RIGHT_A[:4]))
    with pytest.raises(InputError, match="same slices"):
        compare([base, fewer])


def test_compare_cells_are_the_paired_tests_as_scipy_computes_them(tmp_path):
    pats = ("p1", "p2", "p3")
    base = write_eval(tmp_path / "base", predictions("/d", DICE_B, RIGHT_B, patients=pats))
    other = write_eval(tmp_path / "other", predictions("/d", DICE_A, RIGHT_A, patients=pats))
    row = next(ln for ln in compare([base, other]).splitlines() if ln.startswith("| `"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    t = stats.ttest_rel(DICE_A, DICE_B)
    by_patient = [np.mean(d[i : i + 2]) for d in (DICE_A, DICE_B) for i in (0, 2, 4)]
    patients = stats.ttest_rel(by_patient[:3], by_patient[3:])
    correct = stats.ttest_rel(np.array(RIGHT_A, float), np.array(RIGHT_B, float))
    assert cells[1:] == [
        "6",
        f"{np.mean(DICE_A):.4f}",
        f"{np.mean(DICE_B):.4f}",
        f"{t.statistic:.3f}",
        f"{t.pvalue:.4f}",
        f"{patients.pvalue:.4f} (n=3)",
        f"{5 / 6:.4f}",
        f"{2 / 6:.4f}",
        f"{correct.statistic:.3f}",
        f"{correct.pvalue:.4f}",
        "3/0",
        "0.2500",
        "yes",
    ]


def test_compare_without_masks_shows_na(tmp_path):
    """No slice holds a mask (Dice undefined everywhere): the Dice columns say n/a."""
    nan = [np.nan] * 6
    base = write_eval(tmp_path / "base", predictions("/d", nan, RIGHT_B))
    other = write_eval(tmp_path / "other", predictions("/d", nan, RIGHT_B))
    row = next(ln for ln in compare([base, other]).splitlines() if ln.startswith("| `"))
    assert row.endswith(
        "| 6 | n/a | n/a | n/a | n/a | n/a (n=0) | 0.3333 | 0.3333 | n/a "
        "| 1.0000 | 0/0 | 1.0000 | no |"
    )
