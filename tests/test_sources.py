"""Source adapters -> slice table; manifests; official layouts written in tmp_path; real data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungmtl.data.io import read_image
from lungmtl.data.sources import (
    ADAPTERS,
    COLUMNS,
    SliceArrays,
    detect_layout,
    from_class_folders,
    from_covid19_ct_seg,
    from_dicom_folder,
    from_medseg9,
    from_medseg100,
    from_mosmed,
    load_slice,
    load_sources,
    read_manifest,
)
from lungmtl.errors import InputError

RNG = np.random.default_rng(1)
HEADER = "image,mask,mask_multiclass,lung_mask,label,label_level,patient,slice,source,split\n"


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def nii(path: Path, array: np.ndarray) -> None:
    """Stored (x, y, z) with a RAS affine: canonical slice k is ``array[:, :, k]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def volume(z: int = 4) -> np.ndarray:
    return (RNG.normal(size=(6, 5, z)) * 200 - 700).astype(np.float32)


def lesion_mask(z: int, slices: dict[int, int]) -> np.ndarray:
    """A label volume with value ``v`` in slice ``k`` for each ``k: v`` of ``slices``."""
    m = np.zeros((6, 5, z), np.uint8)
    for k, v in slices.items():
        m[2:4, 1:3, k] = v
    return m


def manifest_source(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    png(root / "images" / "a.png", RNG.integers(0, 255, (8, 7)))
    png(root / "images" / "b.png", RNG.integers(0, 255, (8, 7)))
    m = np.zeros((8, 7))
    m[2:4, 2:4] = 255
    png(root / "masks" / "a.png", m)
    png(root / "masks" / "small.png", np.zeros((4, 4)))
    (root / "manifest.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    return root


GOOD_ROWS = [
    "images/a.png,masks/a.png,,,infected,slice,p1,1,src-CT-2,train",
    "images/b.png,,,,healthy,study,p2,,src-CT-0,",
]


# ---------------------------------------------------------------- manifests


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


def test_load_slice_mask_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = manifest_source(tmp_path / "m", ["images/a.png,masks/small.png,,,infected,slice,p,,s,"])
    row = read_manifest(root).iloc[0]
    with pytest.raises(InputError) as e:
        load_slice(row)
    assert "small.png" in str(e.value) and "a.png" in str(e.value)


# ---------------------------------------------------------------- official layouts


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


def write_dicom(
    path: Path, z: float, series: str, instance: int, patient: str = "PAT", orientation=None
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.SeriesInstanceUID, ds.InstanceNumber = patient, series, instance
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = orientation or [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.Rows, ds.Columns = [1, 1], 4, 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.full((4, 4), 24 + instance, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_folder_groups_series_by_patient(tmp_path: Path) -> None:
    """Two series of one PatientID (e.g. lung and soft-tissue reconstructions) are one
    patient, so a split can never put one in training and the other in test."""
    root = tmp_path / "dicoms"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "c").mkdir()
    for i, z in enumerate([5.0, -5.0, 0.0]):
        write_dicom(root / "a" / f"{i}.dcm", z, "1.1", i + 1)
    write_dicom(root / "b" / "0.dcm", 0.0, "2.2", 1)
    # another person; one file's orientation is malformed: ordered by InstanceNumber instead
    write_dicom(root / "c" / "0.dcm", 9.0, "3.3", 2, patient="Q", orientation=[1, 0, 0])
    write_dicom(root / "c" / "1.dcm", 0.0, "3.3", 1, patient="Q", orientation=[1, 0, 0])
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


def test_a_mask_without_geometry_is_refused_on_a_reoriented_image(tmp_path: Path) -> None:
    """A supine DICOM slice is stored in the radiological view, so a PNG mask lines up; a prone
    one is turned 180 degrees on reading, and a PNG mask (no geometry) would then lie rotated."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    write_dicom(root / "images" / "supine.dcm", 0.0, "1.1", 1)
    write_dicom(root / "images" / "prone.dcm", 0.0, "2.2", 1, orientation=[-1, 0, 0, 0, -1, 0])
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


# ---------------------------------------------------------------- real data


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
