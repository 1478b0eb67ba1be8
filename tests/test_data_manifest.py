"""Tests for lungmtl.data.manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    GOOD_ROWS,
    manifest_source,
)

from lungmtl.data.manifest import read_manifest
from lungmtl.data.sources import SliceArrays, detect_layout, load_slice
from lungmtl.data.table import COLUMNS
from lungmtl.errors import InputError


def test_read_manifest_columns_paths_and_source_vs_subsource(tmp_path: Path) -> None:
    root = manifest_source(tmp_path / "mine", GOOD_ROWS)
    t = read_manifest(root)
    assert list(t.columns) == COLUMNS and len(t) == 2
    assert t["image"].tolist() == [str(root / "images" / "a.png"), str(root / "images" / "b.png")]
    assert t["mask"].tolist() == [str(root / "masks" / "a.png"), ""]
    assert t["index"].tolist() == [-1, -1] and t["has_mask"].tolist() == [True, False]
    assert set(t["source"]) == {"mine"}  # the folder, never the label-leaking column
    assert t["subsource"].tolist() == ["src-CT-2", "src-CT-0"]
    assert t["label_level"].tolist() == ["slice", "study"] and t["split"].tolist() == ["train", ""]
    s = load_slice(t.iloc[0])
    assert isinstance(s, SliceArrays) and s.kind == "8bit" and s.image.shape == (8, 7)
    assert s.mask.dtype == np.uint8 and s.mask.sum() == 4 and s.lung_mask is None


def test_folder_of_manifests_is_concatenated(tmp_path: Path) -> None:
    manifest_source(tmp_path / "all" / "one", GOOD_ROWS)
    manifest_source(tmp_path / "all" / "two", GOOD_ROWS[:1])
    t = read_manifest(tmp_path / "all")
    assert t["source"].tolist() == ["one", "one", "two"]
    assert detect_layout(tmp_path / "all") == "manifest"


@pytest.mark.parametrize(
    ("rows", "message", "row"),
    [
        ([GOOD_ROWS[0], "images/b.png,,,,sick,slice,p2,,s,"], "label 'sick'", 2),
        ([GOOD_ROWS[0], "images/b.png,,,,healthy,volume,p2,,s,"], "label_level 'volume'", 2),
        (["images/zz.png,,,,healthy,slice,p2,,s,"], "image file not found", 1),
        (["images/a.png,masks/zz.png,,,healthy,slice,p2,,s,"], "mask file not found", 1),
        ([GOOD_ROWS[0], GOOD_ROWS[0]], "repeats row 1", 2),
        (["images/a.png,,,,healthy,slice,,,s,"], "empty patient", 1),
    ],
)
def test_manifest_errors_name_file_and_row(
    tmp_path: Path, rows: list[str], message: str, row: int
) -> None:
    root = manifest_source(tmp_path / "bad", rows)
    with pytest.raises(InputError, match=message) as e:
        read_manifest(root)
    assert e.value.row == row and e.value.where.endswith("manifest.csv")


def test_manifest_missing_columns(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "manifest.csv").write_text("image,mask\nimages/a.png,\n")
    with pytest.raises(InputError, match=r"missing columns \['label', 'patient'\]"):
        read_manifest(root)
