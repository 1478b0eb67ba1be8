"""A real series (covid-ct-md P001) handed over the ways hospitals export it: other transfer
syntaxes, a scout inside, a dose report and a screenshot beside it, a second reconstruction, a
CD with a DICOMDIR, a zip, one multi-frame file (legacy converted and enhanced), a folder of
PNG slices. Each gives the plain series' infected volume, or says why it cannot."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from predict_helpers import FAST, bright_predictor
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGLSLossless, RLELossless
from study_helpers import (
    cd_layout,
    dose_report,
    enhanced_multiframe,
    legacy_multiframe,
    reconstruction,
    scout,
    secondary_capture,
    uncompressed,
    write,
    zipped,
)

from lungmtl.predict import predict

pytestmark = pytest.mark.realdata
N = 24  # slices of P001 around its infected ones: enough anatomy, seconds per case


@pytest.fixture(scope="module")
def slab(real_data) -> tuple[list[pydicom.Dataset], list[pydicom.Dataset]]:
    """N consecutive slices of P001 centred on its infected ones: as stored (JPEG lossless)
    and decoded."""
    md = real_data / "covid-ct-md"
    table = pd.read_csv(md / "manifest.csv")
    rows = table[table["patient"] == "covid-ct-md-P001"]
    infected = {Path(p).name for p in rows[rows["label"] == "infected"]["image"]}
    stored = [pydicom.dcmread(md / p) for p in rows["image"]]
    stored.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hits = [k for k, ds in enumerate(stored) if Path(ds.filename).name in infected]
    start = max(0, int(np.median(hits)) - N // 2)
    stored = stored[start : start + N]
    return stored, uncompressed(stored)


def _run(inputs, out, predictor=None, **opts):
    o = FAST.__class__(**{**FAST.__dict__, **opts})
    predictor = predictor or bright_predictor()
    return predict(None, [str(p) for p in inputs], out, o, predictor=predictor)


def _same_volume(result, plain):
    assert result.ok, result.message
    s, p = result.summary, plain.summary
    assert s["n_slices"] == p["n_slices"] == N
    assert s["infected_voxels"] == p["infected_voxels"] > 0
    assert s["infected_ml"] == pytest.approx(p["infected_ml"], rel=1e-9)


def test_every_export_of_one_series_gives_the_plain_series_volume(slab, tmp_path):
    stored, plain = slab
    t = tmp_path
    write(t / "plain", plain)
    variants = {
        "jpeg_lossless": write(t / "jpeg_lossless", stored),  # as the archive stores it
        "rle": write(t / "rle", plain, RLELossless),
        "deflated": write(t / "deflated", plain, DeflatedExplicitVRLittleEndian),
        "jpeg_ls": write(t / "jpeg_ls", plain, JPEGLSLossless),
        "scout": write(t / "scout", [*plain, scout(plain[0])]),
        "beside": write(t / "beside", [*plain, dose_report(plain[0]), secondary_capture(plain[0])]),
        "cd": cd_layout(t / "cd", [copy.deepcopy(ds) for ds in plain]),
        "legacy": write(t / "legacy", [legacy_multiframe(plain)]),
        "enhanced.dcm": t / "enhanced.dcm",
    }
    (t / "beside" / "README.txt").write_text("exported by a PACS")
    enhanced_multiframe(plain).save_as(t / "enhanced.dcm")
    variants["beside.zip"] = zipped(t / "beside", t / "beside.zip")
    names = [p.name for p in sorted(variants.values())]
    assert len(set(names)) == len(names)
    results = _run([t / "plain", *variants.values()], t / "o")
    by = {r.name: r for r in results}
    plain_r = by["plain"]
    for name in ["jpeg_lossless", "rle", "deflated", "jpeg_ls", "scout", "beside", "cd",
                 "legacy", "enhanced", "beside_2"]:  # fmt: skip
        _same_volume(by[name], plain_r)
    assert set(by) == {"plain", "jpeg_lossless", "rle", "deflated", "jpeg_ls", "scout",
                       "beside", "cd", "legacy", "enhanced", "beside_2"}  # fmt: skip
    # What was skipped beside the images, and why, is in summary.json.
    listing = by["beside"].summary["input"]["study"]["series"]
    reasons = {d["description"]: d.get("skipped", "") for d in listing}
    assert reasons["Dose Report"].startswith("structured report")
    assert reasons["Patient Protocol"].startswith("secondary capture")
    assert sum(d["predicted"] for d in listing) == 1
    assert any("not DICOM" in n for n in by["beside"].summary["input"]["study"]["notes"])
    assert any("localizer (scout)" in w for w in by["scout"].summary["warnings"])
    assert any("DICOMDIR" in n for n in by["cd"].summary["input"]["study"]["notes"])
    assert by["beside_2"].summary["input"]["path"].endswith("beside.zip")
    for name in ("legacy", "enhanced"):
        assert by[name].summary["input"]["kind"].startswith("DICOM multi-frame")
        assert not (t / "o" / name / "seg.dcm").exists()
    assert (t / "o" / "plain" / "seg.dcm").exists() and (t / "o" / "cd" / "seg.dcm").exists()


def test_multiframe_files_read_as_the_plain_series_voxel_for_voxel(slab, tmp_path):
    from pydicom.uid import generate_uid

    from lungmtl.data.io import read_image

    _, plain = slab
    ref = read_image(write(tmp_path / "plain", plain))
    enhanced_multiframe(plain[::-1]).save_as(tmp_path / "descending.dcm")  # frames stored S->I
    uid = generate_uid()
    halves = [legacy_multiframe(plain[12:], uid), legacy_multiframe(plain[:12], uid)]
    per_frame = [enhanced_multiframe([ds], uid) for ds in plain]  # one frame per file
    for got in (
        read_image(tmp_path / "descending.dcm"),
        read_image(write(tmp_path / "halves", halves)),
        read_image(write(tmp_path / "per_frame", per_frame)),
    ):
        assert np.array_equal(got.array, ref.array)
        assert np.allclose(got.affine, ref.affine, atol=1e-4) and got.spacing_known


def _two_reconstructions(plain, folder):
    soft = reconstruction(plain, 2, "Thorax 2.0 soft", "B31f", 2.0)
    lung = reconstruction(plain, 3, "Thorax 2.0 lung", "B70f", 2.0)
    write(folder / "soft", soft)
    write(folder / "lung", lung)
    write(folder / "other", [dose_report(plain[0]), secondary_capture(plain[0])])
    return soft, lung


def test_a_study_gives_each_reconstruction_or_the_one_chosen_and_says_which(slab, tmp_path):
    _, plain = slab
    write(tmp_path / "plain", plain)
    _soft, lung = _two_reconstructions(plain, tmp_path / "study")
    results = _run([tmp_path / "plain", tmp_path / "study"], tmp_path / "all")
    plain_r, *two = results
    assert len(two) == 2 and all(r.name.count("__") == 2 for r in two)
    assert {r.summary["input"]["kernel"] for r in two} == {"B31f", "B70f"}
    for r in two:
        _same_volume(r, plain_r)
        assert "every axial CT series" in r.summary["input"]["study"]["series_choice"]

    (one,) = _run([tmp_path / "study"], tmp_path / "one", series="one")
    _same_volume(one, plain_r)
    study = one.summary["input"]["study"]
    assert one.summary["input"]["series_uid"] == lung[0].SeriesInstanceUID
    assert "lung" in study["series_choice"] and len(study["series"]) == 4
    skipped = {d["kernel"]: d.get("skipped", "") for d in study["series"]}
    assert skipped["B31f"].startswith("another reconstruction chosen") and "B70f" in skipped["B31f"]

    (two_,) = _run([tmp_path / "study"], tmp_path / "num", series="2")
    assert two_.summary["input"]["kernel"] == "B31f"
    (bad,) = _run([tmp_path / "study"], tmp_path / "bad", series="12345")
    assert not bad.ok and "no axial CT series '12345'" in bad.message and "2:" in bad.message


def test_a_study_is_read_file_by_file_once(slab, tmp_path, monkeypatch):
    _, plain = slab
    _two_reconstructions(plain[:6], tmp_path / "study")
    reads: dict[str, int] = {}
    dcmread = pydicom.dcmread

    def counted(fp, *a, **k):
        reads[str(fp)] = reads.get(str(fp), 0) + 1
        return dcmread(fp, *a, **k)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    results = _run([tmp_path / "study"], tmp_path / "o", dicom_seg=False)
    assert [r.ok for r in results] == [True, True]
    files = [str(p) for p in (tmp_path / "study").rglob("*") if p.is_file()]
    assert len(files) == 14 and {reads.get(f, 0) for f in files} == {1}


def test_a_folder_of_png_slices_is_one_scan_with_a_gap_and_a_broken_file(slab, tmp_path):
    _, plain = slab
    folder = tmp_path / "png"
    folder.mkdir()
    for k, ds in enumerate(plain[:12]):
        if k == 5:  # a missing number
            continue
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        grey = np.clip((hu + 1350) / 1500 * 255, 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(folder / f"slice_{k + 1}.png")
    broken = folder / "slice_9.png"
    broken.write_bytes(broken.read_bytes()[:200])
    (r,) = _run([folder], tmp_path / "o")
    assert r.ok, r.message
    i = r.summary["input"]
    assert r.summary["n_slices"] == 10 and i["kind"] == "image folder"
    assert i["spacing"] == "unknown" and r.summary["infected_ml"] is None
    assert any("slice_9.png" in w for w in r.summary["warnings"])
    (given,) = _run([folder], tmp_path / "s", spacing=(2.0, 0.748, 0.748))
    assert given.summary["infected_ml"] > 0
    assert given.summary["input"]["spacing"].startswith("given")


@pytest.mark.slow
def test_the_shipped_model_finds_the_same_volume_in_a_zipped_study(slab, tmp_path):
    from lungmtl.predict import load_predictor

    _, plain = slab
    write(tmp_path / "plain", plain)
    _two_reconstructions(plain, tmp_path / "study")
    zipped(tmp_path / "study", tmp_path / "study.zip")
    model = load_predictor("covid-unet-cpu-v2", "cpu")
    plain_r, one = _run(
        [tmp_path / "plain", tmp_path / "study.zip"], tmp_path / "o", model, series="one"
    )
    _same_volume(one, plain_r)
    assert one.summary["input"]["kernel"] == "B70f" and plain_r.summary["infected_ml"] > 1
