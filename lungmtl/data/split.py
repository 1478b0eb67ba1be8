"""Patient-level train/validation/test splits: no patient ever lands in two splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def split_by_patient(
    table: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> pd.Series:
    """Assign every slice to train / val / test so that each patient sits in one split.

    Within each source, patients are grouped by what they hold (infected only, healthy only,
    both); each group is shuffled with ``seed`` and its patients are dealt, one by one, to the
    split furthest below its target share of that group's slices, so every source and every kind
    of patient is spread over the splits as evenly as whole patients allow. A group with fewer
    patients than there are splits is dealt against the source's totals instead (a source with
    two patients cannot be split 60/20/20: its patients go where the source's deficit is largest).

    Args:
        table: slice table with ``source``, ``patient`` and ``label`` columns.
        fractions: train, val, test shares (must sum to 1).
        seed: shuffling seed; the same table and seed give the same split.

    Returns:
        A Series of split names aligned with ``table.index``.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(
            f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}"
        )
    rng = np.random.default_rng(seed)
    assignment: dict[tuple[str, str], str] = {}
    for source, part in table.groupby("source", sort=True):
        per_patient = part.groupby("patient")["label"].agg(
            n="size", kind=lambda s: "+".join(sorted(set(s)))
        )
        src_target, src_have = fr * len(part), np.zeros(3)
        for _, stratum in sorted(per_patient.groupby("kind"), key=lambda kv: len(kv[1])):
            patients = stratum.index.to_numpy()
            patients = patients[rng.permutation(len(patients))]
            sizes = stratum.loc[patients, "n"].to_numpy()
            own = len(patients) >= int((fr > 0).sum())
            target, have = fr * sizes.sum(), np.zeros(3)
            for pid, n in zip(patients, sizes, strict=True):
                deficit = (target - have) if own else (src_target - src_have)
                k = int(np.argmax(np.where(fr > 0, deficit, -np.inf)))
                have[k] += n
                src_have[k] += n
                assignment[(source, pid)] = SPLITS[k]
    out = pd.Series(
        [assignment[(s, p)] for s, p in zip(table["source"], table["patient"], strict=True)],
        index=table.index,
        name="split",
    )
    assert_patient_disjoint(table.assign(split=out))
    return out


def assert_patient_disjoint(table: pd.DataFrame) -> None:
    """Raise if any (source, patient) appears in more than one split."""
    n = table.groupby(["source", "patient"])["split"].nunique()
    leaked = n[n > 1]
    if len(leaked):
        raise AssertionError(f"patients in more than one split: {list(leaked.index[:5])}")


def slice_keys(table: pd.DataFrame) -> pd.Series:
    """Slice identities that survive moving the data folder: source, patient, file name, index."""
    names = table["image"].astype(str).map(lambda p: Path(p).name)
    return (
        table["source"].astype(str)
        + "|"
        + table["patient"].astype(str)
        + "|"
        + names
        + "|"
        + table["index"].astype(str)
    )
