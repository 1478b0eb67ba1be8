"""Tests for lungmtl.data.split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungmtl.data.split import assert_patient_disjoint, split_by_patient


def _table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for src, n_pat in (("a", 30), ("b", 7), ("c", 2)):
        for p in range(n_pat):
            kind = ["infected", "healthy", "mixed"][p % 3]
            for s in range(int(rng.integers(1, 12))):
                label = kind if kind != "mixed" else ("infected" if s % 2 else "healthy")
                rows.append({"source": src, "patient": f"{src}{p}", "label": label})
    return pd.DataFrame(rows)


def test_split_keeps_patients_whole_and_is_seeded():
    t = _table()
    s = split_by_patient(t, (0.6, 0.2, 0.2), seed=3)
    assert (t.assign(split=s).groupby(["source", "patient"])["split"].nunique() == 1).all()
    assert s.equals(split_by_patient(t, (0.6, 0.2, 0.2), seed=3))
    assert not s.equals(split_by_patient(t, (0.6, 0.2, 0.2), seed=4))


def test_split_fractions_are_close_for_a_large_source():
    t = _table()
    s = split_by_patient(t, (0.6, 0.2, 0.2), seed=0)
    a = s[t["source"] == "a"].value_counts(normalize=True)
    assert abs(a["train"] - 0.6) < 0.12 and abs(a["test"] - 0.2) < 0.12
    # every split of the large source holds both classes
    for part in ("train", "val", "test"):
        assert set(t.loc[(t["source"] == "a") & (s == part), "label"]) == {"infected", "healthy"}


def test_split_rejects_bad_fractions_and_detects_leaks():
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(_table(), (0.5, 0.2, 0.2))
    leaky = pd.DataFrame({"source": ["a", "a"], "patient": ["p", "p"], "split": ["train", "test"]})
    with pytest.raises(AssertionError, match="more than one split"):
        assert_patient_disjoint(leaky)
