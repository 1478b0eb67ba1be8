"""stats.py: the paired t-tests and McNemar test against known answers and scipy, and the pairing
of two prediction tables slice by slice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import predictions
from scipy import stats

from lungmtl.errors import InputError
from lungmtl.stats import (
    bootstrap_ci,
    mcnemar_exact,
    paired_tests,
    paired_ttest,
    pooled_paired_tests,
)

DICE_A = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6]
DICE_B = [0.7, 0.65, 0.8, 0.6, 0.85, 0.45]
RIGHT_A = [True, True, True, False, True, True]
RIGHT_B = [False, False, True, False, False, True]


def test_paired_ttest_has_the_textbook_answer():
    """Differences 1, 2, 3: mean 2, sd 1, t = 2 * sqrt(3); with 2 degrees of freedom the
    two-sided p is 1 - t / sqrt(t^2 + 2) (Student's t CDF in closed form)."""
    r = paired_ttest([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])
    t = 2 * math.sqrt(3)
    assert r["t"] == pytest.approx(t) and r["n"] == 3
    assert r["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    swapped = paired_ttest([2.0, 3.0, 4.0], [3.0, 5.0, 7.0])
    assert swapped["t"] == pytest.approx(-t) and swapped["p"] == pytest.approx(r["p"])


def test_paired_ttest_agrees_with_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(0.7, 0.1, 40)
    b = a - rng.normal(0.02, 0.05, 40)
    want = stats.ttest_rel(a, b)
    r = paired_ttest(a, b)
    assert (r["t"], r["p"], r["n"]) == (
        pytest.approx(want.statistic),
        pytest.approx(want.pvalue),
        40,
    )


def test_paired_ttest_with_nothing_to_test():
    assert paired_ttest(DICE_A, list(DICE_A)) == {"t": None, "p": 1.0, "n": 6}
    assert paired_ttest([0.5], [0.4]) == {"t": None, "p": None, "n": 1}
    assert paired_ttest([], []) == {"t": None, "p": None, "n": 0}


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
    # b = 5 (only a right), c = 1 (only b right): p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    a = [True] * 5 + [False] + [True] * 3 + [False] * 2
    b = [False] * 5 + [True] + [True] * 3 + [False] * 2
    assert mcnemar_exact(a, b) == {
        "a_right_b_wrong": 5,
        "a_wrong_b_right": 1,
        "p": pytest.approx(14 / 64),
    }
    assert mcnemar_exact(b, a)["p"] == pytest.approx(14 / 64)
    assert mcnemar_exact(a, a) == {"a_right_b_wrong": 0, "a_wrong_b_right": 0, "p": 1.0}


def test_pooled_tests_concatenate_the_pairs():
    """The same slices evaluated under two seeds: pooled, they are twelve pairs, not six."""
    a0, b0 = predictions("/d", DICE_A, RIGHT_A), predictions("/d", DICE_B, RIGHT_B)
    a1 = predictions("/d", [d - 0.05 for d in DICE_A], RIGHT_B)
    b1 = predictions("/d", DICE_B, RIGHT_A)
    r = pooled_paired_tests({"0": (a0, b0), "1": (a1, b1)})
    assert r["n_slices"] == 12 and r["dice"]["n"] == 12
    dice_a = DICE_A + [d - 0.05 for d in DICE_A]
    assert r["dice"]["p"] == pytest.approx(stats.ttest_rel(dice_a, DICE_B + DICE_B).pvalue)
    assert r["mcnemar"]["a_right_b_wrong"] == 3 and r["mcnemar"]["a_wrong_b_right"] == 3
    assert r["dice_patients"]["n"] == 1  # one patient, whatever the seed
    assert "|" not in a0["image"].iloc[0]  # the tables given are not changed


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


def test_bootstrap_ci():
    rng = np.random.default_rng(5)
    assert bootstrap_ci(np.full(30, 0.7)) == pytest.approx((0.7, 0.7))
    small = rng.random(40)
    big = rng.random(4000)
    lo, hi = bootstrap_ci(small, n_boot=500)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big, n_boot=500)
    assert bhi - blo < (hi - lo) / 3  # width shrinks ~ 1/sqrt(n)
    assert bootstrap_ci(small, n_boot=500, seed=1) == bootstrap_ci(small, n_boot=500, seed=1)
    assert bootstrap_ci(small, n_boot=200, seed=1) != bootstrap_ci(small, n_boot=200, seed=2)
    mlo, mhi = bootstrap_ci(small, stat=np.median, n_boot=200)
    assert mlo <= np.median(small) <= mhi
    # 95% interval of a 0/1 correctness vector with 80% correct covers 0.8.
    clo, chi = bootstrap_ci(np.r_[np.ones(80), np.zeros(20)])
    assert clo < 0.8 < chi and 0.65 < clo and chi < 0.95
    with pytest.raises(InputError, match="no"):
        bootstrap_ci([])


def test_bootstrap_over_patients_is_wider_when_slices_of_a_patient_agree():
    """20 patients x 10 near-identical slices hold 20 independent values, not 200: resampling
    patients gives about the interval of 20 values, resampling slices one ~sqrt(10) narrower."""
    rng = np.random.default_rng(3)
    per_patient = rng.random(20)
    values = np.repeat(per_patient, 10) + rng.normal(0, 0.01, 200)
    groups = np.repeat([f"p{i}" for i in range(20)], 10)
    slo, shi = bootstrap_ci(values, n_boot=400)
    plo, phi = bootstrap_ci(values, n_boot=400, groups=groups)
    rlo, rhi = bootstrap_ci(per_patient, n_boot=400)
    assert phi - plo > 2.5 * (shi - slo)
    assert phi - plo == pytest.approx(rhi - rlo, rel=0.35)
    assert plo < values.mean() < phi
    # NaNs drop with their group labels; the median takes the general path
    values[:5] = np.nan
    mlo, mhi = bootstrap_ci(values, stat=np.median, n_boot=100, groups=groups)
    assert mlo <= np.nanmedian(values) <= mhi
    with pytest.raises(InputError, match="groups for"):
        bootstrap_ci(values, groups=groups[:-1])
