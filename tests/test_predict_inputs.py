"""Cases from the inputs: manifest patients and slice order, DICOM series, names, shards."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from predict_helpers import (
    FAST,
    bright_predictor,
    expected_stack,
    phantom_nifti,
    rewrite_manifest,
)
from torch import nn

from lungmtl.data.phantom import make_phantom_volume, write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.models import MultiTaskOutput, create_model
from lungmtl.predict import PredictOptions, Predictor, predict, predict_case
from lungmtl.predict.inputs import iter_cases
from lungmtl.predict.slicefolder import id_breaks
from lungmtl.scan_rule import longest_run


def test_manifest_rows_of_one_nifti_volume_keep_its_geometry(tmp_path):
    """Rows indexing every second slice (2, 4, 6) of one NIfTI: mL from its spacing, with the
    z step doubled, instead of no volumes at all."""
    src = tmp_path / "src"
    src.mkdir()
    phantom_nifti(src / "scan.nii.gz")
    rows = [f"scan.nii.gz,infected,p1,{k},{k}" for k in (2, 4, 6)]
    (src / "manifest.csv").write_text("image,label,patient,index,slice\n" + "\n".join(rows))
    [r] = predict("unused", [src], tmp_path / "out", FAST, predictor=bright_predictor())
    assert r.ok, r.message
    s = r.summary
    assert s["spacing_mm"] == pytest.approx([8.0, 1.1, 1.2])
    mask = np.asarray(nib.load(tmp_path / "out" / "p1" / "mask.nii.gz").dataobj)
    assert s["infected_ml"] == pytest.approx(mask.sum() * 8.0 * 1.1 * 1.2 / 1000, rel=1e-3)


def test_manifest_folder_one_case_per_patient(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=4, size=64, seed=2)
    results = predict("unused", [data], tmp_path / "out", FAST, predictor=bright_predictor())
    assert [r.ok for r in results] == [True, True]
    assert {r.name for r in results} == {"phantom-00", "phantom-01"}
    for r in results:
        assert r.summary["lung_mask"] == "dataset"
        assert r.summary["infected_ml"] is None  # PNG/npy slices: no real geometry
        assert (r.out_dir / "mask.nii.gz").exists()


def test_longest_run_and_the_verdict_rule():
    assert longest_run(np.array([1, 1, 0, 1, 1, 1, 0], bool)) == 3
    assert longest_run(np.zeros(4, bool)) == 0
    assert longest_run(np.array([], bool)) == 0
    # slices 10, 40, 90 of a manifest are not consecutive, however positive
    breaks = id_breaks(["10", "40", "90"])
    assert breaks is None or longest_run(np.ones(3, bool), breaks) == 3  # even steps: no jump
    jumps = id_breaks(["1", "2", "3", "20", "21"])
    assert jumps.tolist() == [False, False, False, True, False]
    assert longest_run(np.ones(5, bool), jumps) == 3
    assert id_breaks(["IM-1", "IM-2"]) is None


def test_slice_number_jumps_break_the_run_of_a_manifest_patient(tmp_path):
    """Slices 1-2 and 30-31 of one patient, all positive: no 3 consecutive slices."""
    data = write_phantom_dataset(tmp_path / "d", n_patients=2, n_slices=4, size=64, seed=0)
    table = pd.read_csv(data / "manifest.csv", keep_default_na=False)
    rows = table[table["patient"] == table["patient"].iloc[0]].copy()
    rows["slice"] = ["1", "2", "30", "31"]
    rows.to_csv(data / "manifest.csv", index=False)
    (case,) = list(iter_cases([data]))
    assert case.breaks.tolist() == [False, False, True, False]
    assert any("slice numbers jump" in w for w in case.warnings)

    class EverySliceInfected(nn.Module):
        def forward(self, x: torch.Tensor) -> MultiTaskOutput:
            cls = torch.tensor([[-10.0, 10.0]]).expand(len(x), 2)
            return MultiTaskOutput(torch.zeros_like(x), cls)

    always = Predictor(EverySliceInfected(), PreprocessConfig(size=64), torch.device("cpu"), "x")
    summary = predict_case(always, case, tmp_path / "out", PredictOptions(report=False))
    assert summary["verdict"] == "healthy" and summary["longest_positive_run"] == 2


def test_single_dicom_slices_report_their_thickness_and_no_ml_without_pixel_spacing(tmp_path):
    from data_helpers import write_dicom

    pixels = np.full((64, 64), 24, np.uint16)
    write_dicom(tmp_path / "a.dcm", pixels, z=0.0, series="1", instance=1)  # 2 mm thick
    (case,) = list(iter_cases([tmp_path / "a.dcm"]))
    assert case.image.spacing == pytest.approx((2.0, 0.7, 0.8)) and case.has_geometry
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    del ds.PixelSpacing
    ds.save_as(tmp_path / "b.dcm")
    (case,) = list(iter_cases([tmp_path / "b.dcm"]))
    assert not case.has_geometry and any("no pixel spacing" in w for w in case.warnings)


@pytest.mark.realdata
def test_a_folder_of_two_series_gives_two_cases_and_missing_slices_fail(real_data, tmp_path):
    md = real_data / "covid-ct-md"
    table = pd.read_csv(md / "manifest.csv")
    p001 = table[table["patient"] == "covid-ct-md-P001"].sort_values("slice")["image"].tolist()
    normal = table[table["patient"] != "covid-ct-md-P001"]["image"].tolist()
    mixed, gaps = tmp_path / "mixed", tmp_path / "gaps"
    mixed.mkdir()
    gaps.mkdir()
    for name in p001[:3] + normal[:4]:
        shutil.copy(md / name, mixed / name.replace("/", "_"))
    for name in p001[10:16] + p001[18:22]:  # two slices missing in the middle
        shutil.copy(md / name, gaps)
    *two, gap = list(iter_cases([mixed, gaps]))
    # Each series of the folder is its own case, named patient__study__series.
    assert sorted(c.image.array.shape[0] for c in two) == [3, 4]
    assert len({c.name for c in two}) == 2 and all(c.name.count("__") == 2 for c in two)
    assert {c.source["series_uid"] for c in two} == {
        pydicom.dcmread(md / p001[0], stop_before_pixels=True).SeriesInstanceUID,
        pydicom.dcmread(md / normal[0], stop_before_pixels=True).SeriesInstanceUID,
    }
    assert not gap.ok and "missing slices" in gap.message
    # With allow_gaps the series is read, with the warning kept for the summary.
    [case] = list(iter_cases([gaps], allow_gaps=True))
    assert case.image.array.shape[0] == 10 and "missing slices" in case.warnings[0]


def test_manifest_slices_stack_in_numeric_not_alphabetical_order(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=12, size=48, seed=3)
    # Shuffle the rows: only the slice column may decide the order.
    rewrite_manifest(data, lambda t: t.sample(frac=1.0, random_state=0))
    cases = list(iter_cases([data]))
    assert [c.name for c in cases] == ["phantom-00", "phantom-01"]
    for c in cases:
        assert c.slice_ids == [str(k) for k in range(12)]  # not 0, 1, 10, 11, 2, ...
        np.testing.assert_array_equal(c.image.array, expected_stack(data, c.name, 12))


def test_manifest_without_numeric_slice_ids_uses_natural_order(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=12, size=48, seed=3)

    def ids(t):
        z = t["image"].str.extract(r"_z(\d+)", expand=False).astype(int)
        t["slice"] = np.where(t["patient"] == "phantom-00", "IM-" + z.astype(str), "")
        # phantom-01: no slice ids; its files are renamed p1_2.npy, p1_10.npy (not zero-padded)
        for i in np.flatnonzero(t["patient"] == "phantom-01"):
            new = f"images/p1_{z.iloc[i]}.npy"
            (data / t.at[t.index[i], "image"]).rename(data / new)
            t.at[t.index[i], "image"] = new
        return t.sample(frac=1.0, random_state=1)

    rewrite_manifest(data, ids)
    p0, p1 = list(iter_cases([data]))  # an empty or text slice id is no raw ValueError
    assert p0.slice_ids == [f"IM-{k}" for k in range(12)]
    np.testing.assert_array_equal(p0.image.array, expected_stack(data, "phantom-00", 12))
    assert p1.slice_ids == [f"p1_{k}.npy" for k in range(12)]
    want = np.stack([np.load(data / "images" / f"p1_{k}.npy") for k in range(12)])
    np.testing.assert_array_equal(p1.image.array, want)


def test_manifest_slices_of_different_sizes_get_unknown_spacing(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    vol = make_phantom_volume(4, 4, 64).hu
    np.save(folder / "a.npy", vol[0])
    np.save(folder / "b.npy", vol[1])
    np.save(folder / "c.npy", make_phantom_volume(5, 4, 48).hu[0])
    rows = [
        {"image": f, "label": "healthy", "patient": "P", "slice": str(k)}
        for k, f in enumerate(["a.npy", "b.npy", "c.npy"])
    ]
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    cases = list(iter_cases([folder]))
    assert [c.name for c in cases] == ["P_0", "P_1", "P_2"]
    for c in cases:
        # Not (1, 64, 64): the pixel count is no spacing in mm.
        assert c.image.spacing == (1.0, 1.0, 1.0) and not c.has_geometry
        assert any("differ in size" in w for w in c.warnings), c.warnings


def test_same_names_in_different_shards_get_distinct_folders(tmp_path):
    for p in ("p1", "p2"):
        (tmp_path / p).mkdir()
        phantom_nifti(tmp_path / p / "CT.nii.gz", n_slices=4, size=64)
    inputs = [tmp_path / "p1" / "CT.nii.gz", tmp_path / "p2" / "CT.nii.gz"]
    out = tmp_path / "out"
    for k in range(2):
        opts = PredictOptions(device="cpu", gradcam=0, report=False, shard=(k, 2))
        predict("unused", inputs, out, opts, predictor=bright_predictor())
    done = {
        p.parent.name: json.loads(p.read_text())["input"]["path"]
        for p in out.glob("*/summary.json")
    }
    assert done == {"CT": str(inputs[0].absolute()), "CT_2": str(inputs[1].absolute())}


def test_a_manifest_is_predicted_despite_labels_and_masks_prediction_does_not_use(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=4, size=48, seed=5)
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    table.loc[0, "label"] = "unsure"  # not a label training accepts
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(data / table.loc[1, "mask"])  # wrong size
    table.loc[2, "mask_multiclass"] = "masks_multiclass/missing.png"
    table.to_csv(data / "manifest.csv", index=False)
    predictor = Predictor(
        create_model("unet", width_mult=0.125, cls_hidden=[16]).eval(),
        PreprocessConfig(size=32),
        torch.device("cpu"),
    )
    results = predict("x", [data], tmp_path / "out", FAST, predictor=predictor)
    assert [r.ok for r in results] == [True, True], [r.message for r in results]
