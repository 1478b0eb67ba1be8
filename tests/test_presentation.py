"""The metric registry, the one formatter and the figures (lungmtl.presentation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungmtl.metrics import CLS_KEYS
from lungmtl.presentation import (
    CLS_COLUMNS,
    METRICS,
    columns,
    fmt,
    fmt_p,
    fmt_pm,
    markdown_table,
    overlay_rgb,
    overlay_sheet,
)


@pytest.mark.parametrize("missing", [None, math.nan, math.inf, np.float32("nan")])
def test_missing_values_read_n_a(missing):
    assert fmt(missing, 100, 2) == "n/a"
    assert fmt_pm(missing, 0.1) == "n/a"
    assert fmt_p(missing) == "n/a"


def test_fmt_scales_rounds_and_keeps_integers_whole():
    assert fmt(0.12345, 100, 2) == "12.35"
    assert fmt(0.5, 1, 3, unit=" mL") == "0.500 mL"
    assert fmt(7) == "7" and fmt(np.int64(3), unit="%") == "3%"
    assert fmt_pm(0.8, 0.05, 100, 1) == "80.0 ± 5.0"
    assert fmt_pm(0.8, None, 100, 1) == "80.0"
    assert fmt_p(0.012345) == "0.0123" and fmt_p(3e-6) == "3.0e-06"


def test_registry_covers_the_reported_keys_and_renames_per_table():
    assert [c.key for c in CLS_COLUMNS] == list(CLS_KEYS)
    assert all(k in METRICS for k in CLS_KEYS)
    (dice,) = columns("dice_mean", dice_mean="Dice mean (%)")
    assert dice.heading == "Dice mean (%)" and dice.scale == METRICS["dice_mean"].scale
    with pytest.raises(KeyError):
        columns("no_such_metric")


def test_markdown_table_uses_each_metrics_digits():
    table = markdown_table(
        {"all": {"n_slices": 4, "mse": 0.012345, "dice_mean": 0.5}}, columns("mse", "dice_mean")
    )
    assert table.splitlines()[0] == "| | n | MSE | Dice (%) |"
    assert table.splitlines()[2] == "| all | 4 | 0.0123 | 50.00 |"


def test_overlay_blends_the_mask_colour_only_inside_the_mask():
    grey = np.full((4, 4), 0.5)
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    rgb = overlay_rgb(grey, mask, color=(1.0, 0.0, 0.0), alpha=0.5, stretch=False)
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, 0].tolist() == [0.5, 0.5, 0.5]
    assert rgb[1, 1].tolist() == pytest.approx([0.75, 0.25, 0.25])


def test_captions_with_dollar_signs_are_drawn_as_text(tmp_path):
    """Slice ids come from file names: "a$_$b" is text, not TeX that breaks savefig."""
    img = np.zeros((8, 8), np.float32)
    case = {"image": img, "true": img > 0, "pred": img > 0, "caption": "z=3 (a$_$b.png)"}
    path = overlay_sheet([case], tmp_path / "o.png")
    assert path.stat().st_size > 0
