"""Tests for lungmtl.data.sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_helpers import (
    GOOD_ROWS,
    HEADER,
    manifest_source,
    nii,
    png,
    volume,
    write_small_dicom,
)

from lungmtl.data.io import read_image
from lungmtl.data.manifest import read_manifest
from lungmtl.data.sources import ADAPTERS, load_slice, load_sources
from lungmtl.data.table import COLUMNS
from lungmtl.errors import InputError


def test_load_slice_mask_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = manifest_source(tmp_path / "m", ["images/a.png,masks/small.png,,,infected,slice,p,,s,"])
    row = read_manifest(root).iloc[0]
    with pytest.raises(InputError) as e:
        load_slice(row)
    assert "small.png" in str(e.value) and "a.png" in str(e.value)


def test_a_mask_without_geometry_is_refused_on_a_reoriented_image(tmp_path: Path) -> None:
    """A supine DICOM slice is stored in the radiological view, so a PNG mask lines up; a prone
    one is turned 180 degrees on reading, and a PNG mask (no geometry) would then lie rotated."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    write_small_dicom(root / "images" / "supine.dcm", 0.0, "1.1", 1)
    write_small_dicom(
        root / "images" / "prone.dcm", 0.0, "2.2", 1, orientation=[-1, 0, 0, 0, -1, 0]
    )
    mask = np.zeros((4, 4))
    mask[0, :2] = 255
    png(root / "masks" / "m.png", mask)
    rows = [
        "images/supine.dcm,masks/m.png,,,infected,slice,p1,1,src,",
        "images/prone.dcm,masks/m.png,,,infected,slice,p2,1,src,",
    ]
    (root / "manifest.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    table = load_sources(root)
    supine = load_slice(table.iloc[0])
    assert supine.mask[0, :2].all() and supine.mask.sum() == 2  # as stored
    assert not read_image(table["image"].iloc[0]).reoriented
    assert read_image(table["image"].iloc[1]).reoriented
    with pytest.raises(InputError, match=r"m\.png.*holds no orientation.*prone\.dcm"):
        load_slice(table.iloc[1])


def test_load_sources_list_and_errors(tmp_path: Path) -> None:
    a = manifest_source(tmp_path / "a", GOOD_ROWS)
    b = manifest_source(tmp_path / "b", GOOD_ROWS[:1])
    t = load_sources([a, ("manifest", b)])
    assert len(t) == 3 and list(t.columns) == COLUMNS
    with pytest.raises(InputError, match="two sources"):
        load_sources([a, a])
    with pytest.raises(InputError, match="unknown layout 'nope'"):
        load_sources([("nope", a)])
    with pytest.raises(InputError, match="not found"):
        load_sources(tmp_path / "missing")
    assert set(ADAPTERS) >= {"manifest", "covid19-ct-seg", "medseg100", "medseg9", "mosmed"}


def test_volume_index_out_of_range(tmp_path: Path) -> None:
    nii(tmp_path / "v.nii.gz", volume(2))
    row = {"image": str(tmp_path / "v.nii.gz"), "index": 5, "mask": "", "lung_mask": ""}
    with pytest.raises(InputError, match="outside"):
        load_slice(row)


@pytest.mark.slow
def test_real_sources_match_their_manifests(real_data: Path) -> None:
    t = load_sources(real_data)
    folders = sorted(p.parent for p in real_data.glob("*/manifest.csv"))
    assert sorted(t["source"].unique()) == [f.name for f in folders]
    for folder in folders:
        m = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
        part = t[t["source"] == folder.name]
        assert len(part) == len(m), folder.name
        assert (part["label"] == "infected").sum() == (m["label"] == "infected").sum()
        assert (part["label"] == "healthy").sum() == (m["label"] == "healthy").sum()
        assert part["patient"].nunique() == m["patient"].nunique()
        assert part["has_mask"].sum() == (m["mask"] != "").sum()
        assert part["subsource"].tolist() == m["source"].tolist()
        # One slice from each source loads, with masks of the image's size.
        for i in (0, len(part) - 1):
            s = load_slice(part.iloc[i])
            assert s.image.ndim == 2 and np.isfinite(s.image).all()
            for m_ in (s.mask, s.mask_multiclass, s.lung_mask):
                assert m_ is None or m_.shape == s.image.shape
    ct = t[t["source"] == "covid-ct-md"]
    s = load_slice(ct.iloc[len(ct) // 2])
    assert s.kind == "hu" and s.image[:32, :32].mean() < -900 and (s.image > 0).any()
    assert set(t.loc[t["source"] != "covid-ct-md", "index"]) == {-1}
