"""Tests for lungmtl.data.layouts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from data_helpers import (
    RNG,
    lesion_mask,
    nii,
    png,
    volume,
    write_small_dicom,
)

from lungmtl.data.layouts import (
    from_class_folders,
    from_covid19_ct_seg,
    from_dicom_folder,
    from_medseg9,
    from_medseg100,
    from_mosmed,
)
from lungmtl.data.sources import detect_layout, load_slice, load_sources
from lungmtl.errors import InputError


def test_covid19_ct_seg_layout(tmp_path: Path) -> None:
    root = tmp_path / "zenodo"
    for name, lesions in [("coronacases_001", {1: 1, 2: 1}), ("radiopaedia_4_85506_1", {0: 1})]:
        nii(root / "COVID-19-CT-Seg_20cases" / f"{name}.nii.gz", volume())
        nii(root / "Infection_Mask" / f"{name}.nii.gz", lesion_mask(4, lesions))
        nii(root / "Lung_Mask" / f"{name}.nii.gz", lesion_mask(4, {0: 1, 1: 2, 2: 1, 3: 2}))
    t = load_sources(root)
    pd.testing.assert_frame_equal(t, from_covid19_ct_seg(root))
    assert detect_layout(root) == "covid19-ct-seg" and len(t) == 8
    assert t["patient"].unique().tolist() == ["coronacases_001", "radiopaedia_4_85506_1"]
    want = ["healthy", "infected", "infected", "healthy", "infected", "healthy", "healthy"]
    assert t["label"].tolist() == [*want, "healthy"]
    assert set(t["subsource"]) == {"coronacases", "radiopaedia"} and set(t["source"]) == {
        "covid19-ct-seg"
    }
    s = load_slice(t.iloc[1])
    assert s.kind == "hu" and s.image.shape == (5, 6) and s.mask.sum() == 4
    assert s.mask_multiclass is None and s.lung_mask.dtype == bool and s.lung_mask.sum() == 4


def test_medseg100_layout_excludes_effusion(tmp_path: Path) -> None:
    root = tmp_path / "medseg"
    nii(root / "tr_im.nii.gz", volume(5))
    nii(root / "tr_mask.nii.gz", lesion_mask(5, {0: 1, 1: 2, 2: 3}))
    nii(root / "val_im.nii.gz", volume(2))  # unlabelled: left out
    t = from_medseg100(root)
    assert t["label"].tolist() == ["infected", "infected", "healthy", "healthy", "healthy"]
    assert t["patient"].nunique() == 5 and t["has_mask"].all()
    s = load_slice(t.iloc[2])
    assert s.mask.sum() == 0 and s.mask_multiclass.max() == 0  # pleural effusion is not infection
    s = load_slice(t.iloc[1])
    assert s.mask.max() == 1 and s.mask_multiclass.max() == 2
    assert detect_layout(root) == "medseg100"


def test_medseg9_layout(tmp_path: Path) -> None:
    root = tmp_path / "m9"
    for i in (1, 2, 10):
        nii(root / "rp_im" / f"{i}.nii.gz", volume(3))
        nii(root / "rp_msk" / f"{i}.nii.gz", lesion_mask(3, {1: 2}))
        nii(root / "rp_lung_msk" / f"{i}.nii.gz", lesion_mask(3, {0: 1, 1: 1, 2: 1}))
    t = load_sources(("medseg9", root))
    pd.testing.assert_frame_equal(t, from_medseg9(root))
    assert t["patient"].unique().tolist() == ["medseg9-1", "medseg9-2", "medseg9-10"]
    assert t["label"].tolist() == ["healthy", "infected", "healthy"] * 3
    assert (t["mask"] == t["mask_multiclass"]).all() and (t["lung_mask"] != "").all()


def test_mosmed_layout(tmp_path: Path) -> None:
    root = tmp_path / "mosmed"
    nii(root / "studies" / "CT-0" / "study_0001.nii.gz", volume(2))
    nii(root / "studies" / "CT-1" / "study_0255.nii.gz", volume(3))
    nii(root / "masks" / "study_0255_mask.nii.gz", lesion_mask(3, {2: 1}))
    nii(root / "studies" / "CT-3" / "study_0900.nii.gz", volume(2))
    t = load_sources(str(root))
    pd.testing.assert_frame_equal(t, from_mosmed(root))
    by = t.groupby("patient")
    assert by["label"].agg(list).to_dict() == {
        "study_0001": ["healthy"] * 2,
        "study_0255": ["healthy", "healthy", "infected"],
        "study_0900": ["infected"] * 2,
    }
    assert by["label_level"].first().to_dict() == {
        "study_0001": "study",
        "study_0255": "slice",
        "study_0900": "study",
    }
    assert t["subsource"].tolist() == ["CT-0"] * 2 + ["CT-1"] * 3 + ["CT-3"] * 2
    assert t["has_mask"].sum() == 3


def test_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    png(root / "COVID" / "1.png", RNG.integers(0, 255, (5, 5)))
    png(root / "COVID" / "2.png", RNG.integers(0, 255, (5, 5)))
    png(root / "non-COVID" / "x" / "3.jpg", RNG.integers(0, 255, (5, 5)))
    with pytest.warns(UserWarning, match="patient"):
        t = load_sources(root)
    assert t["label"].tolist() == ["infected", "infected", "healthy"]
    assert t["patient"].nunique() == 3 and set(t["source"]) == {"kaggle"}
    png(root / "Pneumonia" / "4.png", RNG.integers(0, 255, (5, 5)))
    with pytest.raises(InputError, match=r"unknown class folders \['Pneumonia'\]"):
        from_class_folders(root)


def test_dicom_folder_groups_series_by_patient(tmp_path: Path) -> None:
    """Two series of one PatientID (e.g. lung and soft-tissue reconstructions) are one
    patient, so a split can never put one in training and the other in test."""
    root = tmp_path / "dicoms"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "c").mkdir()
    for i, z in enumerate([5.0, -5.0, 0.0]):
        write_small_dicom(root / "a" / f"{i}.dcm", z, "1.1", i + 1)
    write_small_dicom(root / "b" / "0.dcm", 0.0, "2.2", 1)
    # another person; one file's orientation is malformed: ordered by InstanceNumber instead
    write_small_dicom(root / "c" / "0.dcm", 9.0, "3.3", 2, patient="Q", orientation=[1, 0, 0])
    write_small_dicom(root / "c" / "1.dcm", 0.0, "3.3", 1, patient="Q", orientation=[1, 0, 0])
    with pytest.raises(InputError, match="label"):
        from_dicom_folder(root)
    t = from_dicom_folder(root, label="infected")
    assert t["patient"].tolist() == ["PAT"] * 4 + ["Q"] * 2
    assert [Path(p).name for p in t["image"][:3]] == ["1.dcm", "2.dcm", "0.dcm"]  # by position
    assert [Path(p).name for p in t["image"][4:]] == ["1.dcm", "0.dcm"]  # by InstanceNumber
    t = t.iloc[:4]
    assert set(t["label_level"]) == {"study"} and (t["index"] == -1).all()
    s = load_slice(t.iloc[0])
    assert s.kind == "hu" and s.image[0, 0] == 24 + 2 - 1024
    assert len(load_sources(f"dicom-healthy:{root}")) == 6
    with pytest.raises(InputError, match=r"unknown data layout.*medseg9.*class-folders"):
        detect_layout(root)
