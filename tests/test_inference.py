"""predict(): geometry of mask.nii.gz (NIfTI, real DICOM), burden, bad inputs, CLI, report."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from torch import nn

from lungmtl.cli import main
from lungmtl.config import load_config, to_dict
from lungmtl.data.phantom import make_phantom_volume, write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.errors import InputError
from lungmtl.inference import (
    PredictOptions,
    Predictor,
    _id_breaks,
    iter_cases,
    longest_run,
    predict,
    predict_case,
)
from lungmtl.models import MultiTaskOutput, create_model, save

FAST = PredictOptions(device="cpu", gradcam=0, report=False)


class BrightIsInfected(nn.Module):
    """A stand-in model whose "infection" is every bright pixel (tissue, bone) of its input.

    Its mask is a known function of the image, so where the mask lands in the written file
    tells whether the geometry was kept.
    """

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        seg = 40.0 * (x - 0.4)
        score = 40.0 * (x.mean(dim=(1, 2, 3)) - 0.3)
        return MultiTaskOutput(seg, torch.stack([-score, score], dim=1))


def _bright_predictor(size: int = 64) -> Predictor:
    return Predictor(BrightIsInfected(), PreprocessConfig(size=size), torch.device("cpu"), "fake")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", width_mult=0.125, cls_hidden=[32, 16])
    run = to_dict(load_config(overrides=["preprocess.size=64"]))
    return save(model, tmp_path_factory.mktemp("ck") / "tiny.pt", run_config=run)


def _phantom_nifti(path, n_slices=8, size=96):
    """A phantom stored in a non-canonical voxel order (x, y, z with flips), with a bright marker
    in one corner so that any flip of the mask would be visible."""
    hu = make_phantom_volume(3, n_slices, size).hu.copy()  # (z, rows=A->P, cols=R->L)
    # A bright block in the air outside the body, superior, anterior, patient right: any flip of
    # the mask moves it to where the image is air.
    hu[-3:, 2:10, 2:14] = 300.0
    stored = np.ascontiguousarray(np.transpose(hu, (2, 1, 0))[::-1])  # (x: L->R, y: A->P, z: I->S)
    affine = np.array(
        [[1.2, 0, 0, -60.0], [0, -1.1, 0, 50.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]], dtype=float
    )
    nib.save(nib.Nifti1Image(stored, affine), path)
    return stored, affine


def test_nifti_mask_keeps_the_input_geometry(tmp_path):
    stored, affine = _phantom_nifti(tmp_path / "scan.nii.gz")
    [r] = predict(
        "unused", [tmp_path / "scan.nii.gz"], tmp_path / "out", FAST, predictor=_bright_predictor()
    )
    assert r.ok, r.message
    out = nib.load(tmp_path / "out" / "scan" / "mask.nii.gz")
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    mask = np.asarray(out.dataobj)
    assert mask.shape == stored.shape
    # The stand-in model marks pre-processed intensities >= 0.4 (about -440 HU and above).
    truth = stored > -440
    assert _dice(mask, truth) > 0.9
    marker = stored == 300.0
    assert mask[marker].mean() > 0.8
    for axis in range(3):  # the test would notice a flipped mask
        assert np.flip(mask, axis)[marker].mean() < 0.2, axis
    s = r.summary
    voxel_ml = 1.2 * 1.1 * 4.0 / 1000
    assert s["infected_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-3)
    assert s["lung_mask"] == "derived" and 0 < s["infected_percent_of_lung"] <= 100
    table = pd.read_csv(tmp_path / "out" / "scan" / "slices.csv")
    assert len(table) == stored.shape[2] and table["infected_px"].sum() == mask.sum()


def test_manifest_rows_of_one_nifti_volume_keep_its_geometry(tmp_path):
    """Rows indexing every second slice (2, 4, 6) of one NIfTI: mL from its spacing, with the
    z step doubled, instead of no volumes at all."""
    src = tmp_path / "src"
    src.mkdir()
    _phantom_nifti(src / "scan.nii.gz")
    rows = [f"scan.nii.gz,infected,p1,{k},{k}" for k in (2, 4, 6)]
    (src / "manifest.csv").write_text("image,label,patient,index,slice\n" + "\n".join(rows))
    [r] = predict("unused", [src], tmp_path / "out", FAST, predictor=_bright_predictor())
    assert r.ok, r.message
    s = r.summary
    assert s["spacing_mm"] == pytest.approx([8.0, 1.1, 1.2])
    mask = np.asarray(nib.load(tmp_path / "out" / "p1" / "mask.nii.gz").dataobj)
    assert s["infected_ml"] == pytest.approx(mask.sum() * 8.0 * 1.1 * 1.2 / 1000, rel=1e-3)


@pytest.mark.realdata
def test_dicom_series_mask_lands_on_the_right_voxels(real_data, tmp_path):
    series = real_data / "covid-ct-md" / "P001"
    [r] = predict("unused", [series], tmp_path / "out", FAST, predictor=_bright_predictor())
    assert r.ok, r.message
    img = nib.load(tmp_path / "out" / "P001" / "mask.nii.gz")
    mask = np.asarray(img.dataobj)
    assert mask.shape[0] == len(list(series.glob("*.dcm")))
    inv = np.linalg.inv(img.affine)
    # Independent of lungmtl's reader: pixel (row, col) of one DICOM file -> world (LPS -> RAS).
    ds = pydicom.dcmread(sorted(series.glob("*.dcm"))[40])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, hu.shape[0], 400), rng.integers(0, hu.shape[1], 400)
    lps = ipp + np.outer(cols * dc, iop[:3]) + np.outer(rows * dr, iop[3:])
    ras = lps * np.array([-1.0, -1.0, 1.0])
    vox = np.rint((inv[:3, :3] @ ras.T).T + inv[:3, 3]).astype(int)
    assert (vox >= 0).all() and (vox < np.array(mask.shape)).all()
    got = mask[vox[:, 0], vox[:, 1], vox[:, 2]].astype(bool)
    want = hu[rows, cols] > -440
    # Resampling to 64 px and back blurs edges; a wrong orientation agrees about half the time.
    assert (got == want).mean() > 0.9
    assert r.summary["spacing_mm"] is not None and r.summary["lung_ml"] > 100


def test_manifest_folder_one_case_per_patient(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=4, size=64, seed=2)
    results = predict("unused", [data], tmp_path / "out", FAST, predictor=_bright_predictor())
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
    breaks = _id_breaks(["10", "40", "90"])
    assert breaks is None or longest_run(np.ones(3, bool), breaks) == 3  # even steps: no jump
    jumps = _id_breaks(["1", "2", "3", "20", "21"])
    assert jumps.tolist() == [False, False, False, True, False]
    assert longest_run(np.ones(5, bool), jumps) == 3
    assert _id_breaks(["IM-1", "IM-2"]) is None


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


def _bad_inputs(tmp_path):
    photo = tmp_path / "holiday.png"
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 220, 30  # saturated colour: no CT looks like this
    Image.fromarray(rgb).save(photo)
    no_lung = tmp_path / "abdomen.npy"
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) / 26) ** 2 + ((xx - 32) / 30) ** 2 < 1
    np.save(no_lung, np.where(body, 40.0, -1000.0)[None].repeat(3, 0).astype(np.float32))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    return photo, no_lung, broken


def test_cli_predict_reports_every_case_and_fails_bad_ones(tiny_checkpoint, tmp_path, capsys):
    _phantom_nifti(tmp_path / "scan.nii.gz", n_slices=5, size=64)
    photo, no_lung, broken = _bad_inputs(tmp_path)
    inputs = [tmp_path / "scan.nii.gz", photo, no_lung, broken, tmp_path / "missing.nii"]
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            *map(str, inputs),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--gradcam",
            "1",
        ]
    )
    text = capsys.readouterr().out
    assert code == 1
    lines = text.strip().splitlines()
    assert lines[0].startswith("ok     scan:")
    assert "colour picture" in text and "no lungs in view" in text
    assert "cannot read NIfTI" in text and "input not found" in text
    assert lines[-1].startswith("1 case(s) ok, 4 failed")
    case = tmp_path / "out" / "scan"
    summary = json.loads((case / "summary.json").read_text())
    for key in ("verdict", "rule", "infected_ml", "infected_percent_of_lung", "timing_s"):
        assert key in summary, key
    assert set(summary["timing_s"]) >= {"read", "preprocess", "model", "postprocess", "write"}
    slices = pd.read_csv(case / "slices.csv")
    need = max(1, min(3, len(slices)))
    expect = "infected" if longest_run(slices["positive"].to_numpy()) >= need else "healthy"
    assert summary["verdict"] == expect
    html = (case / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1
    assert "http://" not in html and "https://" not in html
    # the viewer's script is inline: no <script src=...> (tests/test_report_viewer.py)
    assert "<script" in html and not re.search(r"<script\b[^>]*\bsrc\s*=", html)
    assert (case / "overlays.png").exists()
    assert not (tmp_path / "out" / "holiday").exists()


def test_all_good_inputs_exit_zero(tiny_checkpoint, tmp_path, capsys):
    _phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            str(tmp_path / "scan.nii.gz"),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--gradcam",
            "0",
            "--crf",
        ]
    )
    assert code == 0, capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "scan" / "summary.json").read_text())["crf"] is True


@pytest.mark.realdata
def test_dicom_folders_with_mixed_series_or_missing_slices_fail(real_data, tmp_path):
    md = real_data / "covid-ct-md"
    table = pd.read_csv(md / "manifest.csv")
    p001 = table[table["patient"] == "covid-ct-md-P001"].sort_values("slice")["image"].tolist()
    normal = table[table["patient"] != "covid-ct-md-P001"]["image"].tolist()
    mixed, gaps = tmp_path / "mixed", tmp_path / "gaps"
    mixed.mkdir()
    gaps.mkdir()
    for name in p001[:3] + normal[:3]:
        shutil.copy(md / name, mixed / name.replace("/", "_"))
    for name in p001[10:16] + p001[18:22]:  # two slices missing in the middle
        shutil.copy(md / name, gaps)
    items = list(iter_cases([mixed, gaps]))
    assert all(not getattr(i, "ok", True) for i in items), items
    assert "2 DICOM series" in items[0].message
    assert "missing slices" in items[1].message
    # With allow_gaps the series is read, with the warning kept for the summary.
    [case] = list(iter_cases([gaps], allow_gaps=True))
    assert case.image.array.shape[0] == 10 and "missing slices" in case.warnings[0]


def test_shards_split_the_inputs_and_resume_skips_finished_cases(tiny_checkpoint, tmp_path):
    for i in range(3):
        _phantom_nifti(tmp_path / f"scan{i}.nii.gz", n_slices=4, size=64)
    inputs = [str(tmp_path / f"scan{i}.nii.gz") for i in range(3)]
    base = [
        "predict",
        "--checkpoint",
        str(tiny_checkpoint),
        *inputs,
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--gradcam",
        "0",
        "-q",
    ]
    assert main([*base[:-1], "--shard", "0/2"]) == 0
    assert main([*base[:-1], "--shard", "1/2"]) == 0
    done = sorted(p.parent.name for p in (tmp_path / "out").glob("*/summary.json"))
    assert done == ["scan0", "scan1", "scan2"]  # two shards cover all, no case twice
    stamp = (tmp_path / "out" / "scan1" / "summary.json").stat().st_mtime_ns
    assert main([*base[:-1], "--resume"]) == 0
    assert (tmp_path / "out" / "scan1" / "summary.json").stat().st_mtime_ns == stamp
    assert main([*base[:-1], "--shard", "2/2"]) == 2


def test_cropped_runs_paste_the_mask_back_into_the_lung_box(tmp_path):
    stored, _ = _phantom_nifti(tmp_path / "scan.nii.gz")
    predictor = Predictor(
        BrightIsInfected(), PreprocessConfig(size=64, crop="lungs"), torch.device("cpu"), "fake"
    )
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], tmp_path / "out", FAST, predictor=predictor)
    assert r.ok, r.message
    mask = np.asarray(nib.load(tmp_path / "out" / "scan" / "mask.nii.gz").dataobj).astype(bool)
    assert mask.shape == stored.shape
    truth = stored > -440
    # Inside the box the stand-in's mask is where it should be; outside it (the air corner with
    # the bright marker, most of the table) nothing is predicted.
    assert (mask & truth).sum() / mask.sum() > 0.9
    assert not mask[stored == 300.0].any()
    assert 0.3 * truth.sum() < mask.sum() < truth.sum()


def test_onnx_engine_gives_the_eager_results(tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (lungmtl[export])")
    _phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    tables = {}
    for engine in ("torch", "onnx"):
        args = ["predict", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "scan.nii.gz")]
        args += ["--out", str(tmp_path / engine), "--device", "cpu", "--engine", engine]
        assert main(args) == 0, capsys.readouterr().out
        tables[engine] = pd.read_csv(tmp_path / engine / "scan" / "slices.csv")
        summary = json.loads((tmp_path / engine / "scan" / "summary.json").read_text())
        assert summary["engine"] == engine
    np.testing.assert_allclose(
        tables["onnx"]["p_infected"], tables["torch"]["p_infected"], atol=1e-4
    )
    torch_mask = np.asarray(nib.load(tmp_path / "torch" / "scan" / "mask.nii.gz").dataobj)
    onnx_mask = np.asarray(nib.load(tmp_path / "onnx" / "scan" / "mask.nii.gz").dataobj)
    assert (torch_mask != onnx_mask).mean() < 1e-3
    with pytest.raises(InputError, match="engine"):
        predict(tiny_checkpoint, [], tmp_path / "x", PredictOptions(engine="tensorrt"))


# ---------------------------------------------------------------- manifest slice order


def _rewrite_manifest(data, patient_rows):
    """Rewrite ``data/manifest.csv`` through ``patient_rows(table) -> table``."""
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    patient_rows(table).to_csv(data / "manifest.csv", index=False)


def _expected_stack(data, patient, n):
    return np.stack([np.load(data / "images" / f"{patient}_z{k:03d}.npy") for k in range(n)])


def test_manifest_slices_stack_in_numeric_not_alphabetical_order(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_patients=2, n_slices=12, size=48, seed=3)
    # Shuffle the rows: only the slice column may decide the order.
    _rewrite_manifest(data, lambda t: t.sample(frac=1.0, random_state=0))
    cases = list(iter_cases([data]))
    assert [c.name for c in cases] == ["phantom-00", "phantom-01"]
    for c in cases:
        assert c.slice_ids == [str(k) for k in range(12)]  # not 0, 1, 10, 11, 2, ...
        np.testing.assert_array_equal(c.image.array, _expected_stack(data, c.name, 12))


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

    _rewrite_manifest(data, ids)
    p0, p1 = list(iter_cases([data]))  # an empty or text slice id is no raw ValueError
    assert p0.slice_ids == [f"IM-{k}" for k in range(12)]
    np.testing.assert_array_equal(p0.image.array, _expected_stack(data, "phantom-00", 12))
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


# ---------------------------------------------------------------- failures stay in their case


def _zero_affine_nifti(path):
    img = nib.Nifti1Image(np.full((8, 8, 3), -1000.0, np.float32), np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.zeros((4, 4)), code=1)
    nib.save(nib.Nifti1Image(img.dataobj, None, img.header), path)


def test_library_errors_and_crashes_fail_one_case_and_the_batch_goes_on(tmp_path, monkeypatch):
    _zero_affine_nifti(tmp_path / "noaxes.nii.gz")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "huge.png")
    _phantom_nifti(tmp_path / "crash.nii.gz", n_slices=4, size=64)
    _phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # huge.png: a "decompression bomb"
    import lungmtl.inference as inference

    real = inference.write_mask_like

    def disk_full(mask, ref, path):
        if ref.path.name == "crash.nii.gz":
            raise OSError(28, "No space left on device")
        return real(mask, ref, path)

    monkeypatch.setattr(inference, "write_mask_like", disk_full)
    inputs = [tmp_path / n for n in ("noaxes.nii.gz", "huge.png", "crash.nii.gz", "scan.nii.gz")]
    lines = []
    results = predict(
        "unused", inputs, tmp_path / "out", FAST, predictor=_bright_predictor(), echo=lines.append
    )
    assert [r.name for r in results] == ["noaxes", "huge", "crash", "scan"]
    assert [r.ok for r in results] == [False, False, False, True], [r.message for r in results]
    assert "noaxes.nii.gz" in results[0].message and "affine" in results[0].message
    assert "huge.png" in results[1].message and "too large" in results[1].message
    assert "crash.nii.gz" in results[2].message and "No space left" in results[2].message
    assert lines[2].startswith("FAILED crash:") and len(lines) == 4
    assert not (tmp_path / "out" / "crash" / "summary.json").exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "write_mask_like", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict("unused", inputs[3:], tmp_path / "out2", FAST, predictor=_bright_predictor())


# ---------------------------------------------------------------- names, resume, atomic writes


def test_same_names_in_different_shards_get_distinct_folders(tmp_path):
    for p in ("p1", "p2"):
        (tmp_path / p).mkdir()
        _phantom_nifti(tmp_path / p / "CT.nii.gz", n_slices=4, size=64)
    inputs = [tmp_path / "p1" / "CT.nii.gz", tmp_path / "p2" / "CT.nii.gz"]
    out = tmp_path / "out"
    for k in range(2):
        opts = PredictOptions(device="cpu", gradcam=0, report=False, shard=(k, 2))
        predict("unused", inputs, out, opts, predictor=_bright_predictor())
    done = {p.parent.name: json.loads(p.read_text())["input"] for p in out.glob("*/summary.json")}
    assert done == {"CT": str(inputs[0].absolute()), "CT_2": str(inputs[1].absolute())}


def test_resume_redoes_a_case_whose_summary_is_for_another_input(tmp_path):
    for p in ("a", "b"):
        (tmp_path / p).mkdir()
        _phantom_nifti(tmp_path / p / "scan.nii.gz", n_slices=4, size=64)
    out = tmp_path / "out"
    predict("unused", [tmp_path / "a" / "scan.nii.gz"], out, FAST, predictor=_bright_predictor())
    resume = PredictOptions(device="cpu", gradcam=0, report=False, resume=True)
    [r] = predict(
        "unused", [tmp_path / "b" / "scan.nii.gz"], out, resume, predictor=_bright_predictor()
    )
    assert r.ok and r.message != "done before"
    summary = json.loads((out / "scan" / "summary.json").read_text())
    assert summary["input"] == str((tmp_path / "b" / "scan.nii.gz").absolute())
    # The same input again: now it is done.
    [r] = predict(
        "unused", [tmp_path / "b" / "scan.nii.gz"], out, resume, predictor=_bright_predictor()
    )
    assert r.message == "done before"


def test_a_rerun_failing_halfway_leaves_no_summary_that_resume_would_trust(tmp_path, monkeypatch):
    _phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    out = tmp_path / "out"
    opts = PredictOptions(device="cpu", gradcam=0, report=True)
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], out, opts, predictor=_bright_predictor())
    assert r.ok and (out / "scan" / "summary.json").exists()
    stamp = (out / "scan" / "mask.nii.gz").stat().st_mtime_ns
    from lungmtl import html_report

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(html_report, "write_report", disk_full)  # after mask, slices, pictures
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], out, opts, predictor=_bright_predictor())
    assert not r.ok and "No space left" in r.message
    assert not (out / "scan" / "summary.json").exists()  # the old one no longer vouches
    assert (out / "scan" / "mask.nii.gz").stat().st_mtime_ns == stamp  # nothing half-replaced
    assert sorted(p.name for p in (out / "scan").iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    resume = PredictOptions(device="cpu", gradcam=0, report=True, resume=True)
    [r] = predict("unused", [tmp_path / "scan.nii.gz"], out, resume, predictor=_bright_predictor())
    assert r.ok and r.message != "done before"
    assert (out / "scan" / "summary.json").exists() and (out / "scan" / "report.html").exists()
