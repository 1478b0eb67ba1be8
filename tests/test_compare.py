"""compare.py: pairing two evaluations slice by slice, the paired tests, the Markdown table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lungmtl.cli import main
from lungmtl.compare import compare
from lungmtl.stats import paired_tests
from lungmtl.errors import InputError


def predictions(root: str, dice, correct, patients=("p1",), source="src") -> pd.DataFrame:
    """A predictions.csv table: slices 0..n-1 of ``img.nii.gz`` under ``root/patient``."""
    n = len(dice)
    pats = [patients[i * len(patients) // n] for i in range(n)]
    return pd.DataFrame(
        {
            "image": [f"{root}/{source}/{p}/img.nii.gz" for p in pats],
            "index": range(n),
            "source": source,
            "patient": pats,
            "dice": dice,
            "correct": correct,
        }
    )


def write_eval(folder, table: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "predictions.csv", index=False)
    return folder


DICE_A = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6]
DICE_B = [0.7, 0.65, 0.8, 0.6, 0.85, 0.45]
RIGHT_A = [True, True, True, False, True, True]
RIGHT_B = [False, False, True, False, False, True]


def test_paired_tests_by_hand():
    a = predictions("/data", DICE_A, RIGHT_A)
    b = predictions("/data", DICE_B, RIGHT_B)
    r = paired_tests(a, b)
    assert r["n_slices"] == 6
    t = stats.ttest_rel(DICE_A, DICE_B)
    assert r["dice"]["t"] == pytest.approx(t.statistic) and r["dice"]["p"] == pytest.approx(
        t.pvalue
    )
    assert r["dice"]["mean_a"] == pytest.approx(np.mean(DICE_A))
    assert r["dice"]["mean_b"] == pytest.approx(np.mean(DICE_B))
    assert r["correct"]["acc_a"] == pytest.approx(5 / 6) and r["correct"]["acc_b"] == 2 / 6
    # a is right where b is wrong on 3 slices, never the reverse: exact p = 2 * 0.5**3.
    assert r["mcnemar"] == {"a_right_b_wrong": 3, "a_wrong_b_right": 0, "p": pytest.approx(0.25)}


def test_identical_evaluations_have_nothing_to_test():
    a = predictions("/data", DICE_A, RIGHT_A)
    r = paired_tests(a, a.copy())
    assert r["dice"]["t"] is None and r["dice"]["p"] == 1.0
    assert r["correct"]["t"] is None and r["correct"]["p"] == 1.0
    assert r["mcnemar"] == {"a_right_b_wrong": 0, "a_wrong_b_right": 0, "p": 1.0}


def test_evaluations_pair_after_the_data_folder_moved():
    """The same slices read from another folder (another machine, a renamed mount): paired by
    source, patient, file name and index as evaluate keys them, in any row order."""
    a = predictions("/old/data", DICE_A, RIGHT_A, patients=("p1", "p2"))
    b = predictions("/mnt/new/place", DICE_B, RIGHT_B, patients=("p1", "p2"))
    r = paired_tests(a, b.iloc[::-1].reset_index(drop=True))
    assert r["n_slices"] == 6
    assert r["dice"]["p"] == pytest.approx(stats.ttest_rel(DICE_A, DICE_B).pvalue)
    assert r["mcnemar"]["a_right_b_wrong"] == 3
    # Tables written before evaluate recorded patients pair by file name and index.
    old_a, old_b = (t.drop(columns=["source", "patient"]) for t in (a, b))
    assert paired_tests(old_a, old_b)["n_slices"] == 6


def test_other_slices_are_refused():
    a = predictions("/data", DICE_A, RIGHT_A, patients=("p1", "p2"))
    with pytest.raises(InputError, match="same slices"):
        paired_tests(a, a.iloc[:-1])
    # The same file name and index of another patient is another slice.
    other = a.assign(patient=a["patient"].replace({"p2": "p3"}))
    with pytest.raises(InputError, match="same slices"):
        paired_tests(a, other)


def test_slices_whose_short_keys_repeat_pair_by_path():
    """Two files of one patient with the same name in different folders: the short keys are
    not unique, so the whole path pairs them (as before)."""
    a = pd.concat(
        [
            predictions("/data/s1", DICE_A[:3], RIGHT_A[:3]),
            predictions("/data/s2", DICE_A[3:], RIGHT_A[3:]),
        ],
        ignore_index=True,
    )
    b = a.assign(dice=DICE_B, correct=RIGHT_B)
    r = paired_tests(a, b.iloc[::-1])
    assert r["n_slices"] == 6
    assert r["dice"]["p"] == pytest.approx(stats.ttest_rel(DICE_A, DICE_B).pvalue)


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


def test_the_patient_dice_test_counts_patients_not_slices():
    """Model a beats b by 0.02 on every slice of 3 patients with 50 slices each: the slice
    test sees 150 pairs, the patient test 3, and says so with a larger p-value."""
    rng = np.random.default_rng(0)
    rows = []
    for k, level in enumerate([0.3, 0.5, 0.7]):
        for z in range(50):
            d = level + rng.normal(0, 0.05)
            rows.append(
                {
                    "image": f"p{k}.nii",
                    "index": z,
                    "source": "s",
                    "patient": f"p{k}",
                    "dice": d,
                    "correct": True,
                    "delta": 0.02 + rng.normal(0, 0.05),
                }
            )
    frame = pd.DataFrame(rows)
    a = frame.drop(columns="delta")
    b = a.assign(dice=frame["dice"] - frame["delta"])
    r = paired_tests(a, b)
    assert r["dice"]["n"] == 150 and r["dice_patients"]["n"] == 3
    assert r["dice"]["p"] < 0.05
    assert r["dice_patients"]["p"] > r["dice"]["p"]
    old = paired_tests(a.drop(columns=["source", "patient"]), b.drop(columns=["source", "patient"]))
    assert old["dice_patients"] == {"t": None, "p": None, "n": 0}  # predictions without patients
