"""Scans as hospitals and datasets hand them over (issue 24): scouts inside a series, a folder
of slice images, and what summary.json says was read and assumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_helpers import write_dicom
from PIL import Image
from predict_helpers import FAST, bright_predictor
from test_predict_dicomseg import write_series

from lungmtl.data.phantom import make_phantom_volume
from lungmtl.predict import predict


def _run(inputs, out, **opts):
    o = FAST.__class__(**{**FAST.__dict__, **opts})
    return predict(None, list(inputs), out, o, predictor=bright_predictor())


def _scout(folder, name="scout.dcm", localizer=True):
    """A coronal scout of another size, far from the axial slices, in the same series."""
    tags = {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]} if localizer else {}
    write_dicom(
        folder / name,
        np.full((48, 80), 1000, np.uint16),
        z=0.0,
        series="1.2.826.0.1.3680043.99.1",
        instance=99,
        iop=(1, 0, 0, 0, 0, -1),
        ImagePositionPatient=[-200.0, 0.0, 400.0],
        FrameOfReferenceUID="1.2.826.0.1.3680043.99.2",
        StudyInstanceUID="1.2.826.0.1.3680043.99.3",
        **tags,
    )


def test_a_scout_inside_the_series_is_left_out_with_a_note_and_changes_nothing(tmp_path):
    hu = make_phantom_volume(11, 8, 64).hu
    write_series(tmp_path / "plain", hu)
    write_series(tmp_path / "scout", hu)
    _scout(tmp_path / "scout")
    write_series(tmp_path / "untagged", hu)
    _scout(tmp_path / "untagged", localizer=False)
    plain, scout, untagged = _run(
        [tmp_path / "plain", tmp_path / "scout", tmp_path / "untagged"], tmp_path / "o"
    )
    for r in (plain, scout, untagged):
        assert r.ok, r.message
        assert r.summary["n_slices"] == 8 and r.summary["input"]["slices"] == 8
        assert r.summary["infected_voxels"] == plain.summary["infected_voxels"]
    for r in (scout, untagged):
        assert any("localizer (scout) image(s) left out" in w for w in r.summary["warnings"])
    assert not any("gap" in w for w in scout.summary["warnings"])


def test_a_scout_only_series_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    _scout(tmp_path / "s")
    (r,) = _run([tmp_path / "s"], tmp_path / "o")
    assert not r.ok and "no axial CT image series" in r.message
    assert "localizer (scout) images" in r.message


def test_the_input_block_names_the_series_kernel_spacing_and_intensity(tmp_path):
    hu = make_phantom_volume(12, 6, 64).hu
    write_series(tmp_path / "ct", hu)
    for f in (tmp_path / "ct").iterdir():
        import pydicom

        ds = pydicom.dcmread(f)
        ds.ConvolutionKernel, ds.SeriesDescription = "B70f", "Thorax 1.0 lung"
        ds.save_as(f)
    (r,) = _run([tmp_path / "ct"], tmp_path / "o")
    i = r.summary["input"]
    assert i["kind"] == "DICOM series" and i["kernel"] == "B70f"
    assert i["series_description"] == "Thorax 1.0 lung" and i["series_uid"].startswith("1.2.826")
    assert i["spacing"].startswith("DICOM") and i["intensity"].startswith("Hounsfield")
    assert i["path"] == str((tmp_path / "ct").absolute())


def _png_slices(folder, grey, names):
    folder.mkdir(parents=True, exist_ok=True)
    for g, n in zip(grey, names, strict=True):
        Image.fromarray(g).save(folder / n)


def test_a_folder_of_slice_images_is_one_scan_like_the_same_slices_stacked(tmp_path):
    hu = make_phantom_volume(13, 10, 64).hu
    grey = (np.clip((hu + 1000) / 1400, 0, 1) * 255).round().astype(np.uint8)
    # Natural order, not text order: IM-2 before IM-10.
    _png_slices(tmp_path / "png", grey, [f"IM-{k + 1}.png" for k in range(10)])
    np.save(tmp_path / "stack.npy", grey.astype(np.float32))
    folder, stacked = _run([tmp_path / "png", tmp_path / "stack.npy"], tmp_path / "o")
    assert folder.ok and stacked.ok, (folder.message, stacked.message)
    assert folder.summary["n_slices"] == 10
    assert folder.summary["infected_voxels"] == stacked.summary["infected_voxels"] > 0
    assert folder.summary["input"]["kind"] == "image folder"
    assert folder.summary["infected_ml"] is None and folder.summary["input"]["spacing"] == "unknown"
    ids = pd.read_csv(folder.out_dir / "slices.csv")["slice_id"].tolist()
    assert ids == list(range(1, 11))
    given = _run([tmp_path / "png"], tmp_path / "o2", spacing=(2.0, 0.7, 0.7))[0]
    voxel_ml = 2.0 * 0.7 * 0.7 / 1000
    assert given.summary["infected_ml"] == round(given.summary["infected_voxels"] * voxel_ml, 3)
    assert given.summary["input"]["spacing"].startswith("given")


def test_unreadable_and_missing_slice_images_are_skipped_and_break_the_runs(tmp_path):
    hu = make_phantom_volume(14, 10, 64).hu
    grey = (np.clip((hu + 1000) / 1400, 0, 1) * 255).round().astype(np.uint8)
    names = [f"z{k:02d}.png" for k in range(1, 11)]
    keep = [k for k in range(10) if k != 6]  # z07 missing
    _png_slices(tmp_path / "png", grey[keep], [names[k] for k in keep])
    data = (tmp_path / "png" / "z04.png").read_bytes()
    (tmp_path / "png" / "z04.png").write_bytes(data[: len(data) // 3])  # truncated
    (r,) = _run([tmp_path / "png"], tmp_path / "o")
    assert r.ok, r.message
    assert r.summary["n_slices"] == 8 and r.summary["input"]["skipped"] == ["z04.png"]
    assert any("1 unreadable slice image(s) skipped" in w for w in r.summary["warnings"])
    ids = pd.read_csv(r.out_dir / "slices.csv")["slice_id"].tolist()
    assert ids == [1, 2, 3, 5, 6, 8, 9, 10]


def test_a_folder_of_slice_images_of_different_sizes_is_refused(tmp_path):
    grey = np.full((64, 64), 100, np.uint8)
    _png_slices(tmp_path / "png", [grey, grey[:32]], ["a1.png", "a2.png"])
    (r,) = _run([tmp_path / "png"], tmp_path / "o")
    assert not r.ok and "differ in size" in r.message


def _series_files(folder, hu, **kw):
    write_series(folder, hu, **kw)
    return sorted(folder.iterdir())


def test_a_zip_is_unpacked_safely_and_its_series_predicted(tmp_path):
    import zipfile

    hu = make_phantom_volume(13, 6, 64).hu
    files = _series_files(tmp_path / "ct", hu)
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in files:
            z.write(f, f"PATIENT/STUDY/SERIES/{f.name}")
        z.writestr("../escaped.dcm", files[0].read_bytes())  # would land outside
        z.writestr("/abs.dcm", files[0].read_bytes())
    plain, zipped = _run([tmp_path / "ct", archive], tmp_path / "o")
    assert zipped.ok, zipped.message
    assert zipped.name == "export" and zipped.summary["n_slices"] == 6
    assert zipped.summary["infected_voxels"] == plain.summary["infected_voxels"]
    assert any("unsafe or clashing paths left out" in w for w in zipped.summary["warnings"])
    assert not (tmp_path / "escaped.dcm").exists() and not __import__("os").path.exists("/abs.dcm")


def test_a_bad_or_oversized_zip_is_refused_by_name(tmp_path):
    import zipfile

    from lungmtl.data.archive import unpack_zip
    from lungmtl.errors import InputError

    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    (r,) = _run([broken], tmp_path / "o")
    assert not r.ok and "broken.zip" in r.message and "not a readable zip" in r.message
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.dcm", b"\0" * 5_000_000)
    with pytest.raises(InputError, match=r"bomb.zip.*unpacks to .* more than"):
        unpack_zip(bomb, max_bytes=1_000_000)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("notes.txt", "nothing here")
    (r,) = _run([empty], tmp_path / "o2")
    assert not r.ok and "zip holds no DICOM image files" in r.message


def test_reformats_reports_and_scouts_of_a_study_are_skipped_with_their_reasons(tmp_path):
    hu = make_phantom_volume(14, 6, 64).hu
    write_series(tmp_path / "study" / "axial", hu)
    write_series(tmp_path / "study" / "coronal", hu, iop=(1, 0, 0, 0, 0, -1),
                 step=(0.0, 2.5, 0.0), series="1.2.826.0.1.3680043.99.7")  # fmt: skip
    (tmp_path / "study" / "scout").mkdir()
    _scout(tmp_path / "study" / "scout")  # its own series here
    import pydicom

    for f in (tmp_path / "study" / "scout").iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.8"
        ds.save_as(f)
    (r,) = _run([tmp_path / "study"], tmp_path / "o")
    assert r.ok and r.name == "study" and r.summary["n_slices"] == 6
    skipped = [d["skipped"] for d in r.summary["input"]["study"]["series"] if not d["predicted"]]
    assert sorted(s.split(" ")[0] for s in skipped) == ["localizer", "not"]
    assert any("coronal or sagittal reformat" in s for s in skipped)


def test_a_study_without_axial_ct_says_what_it_holds(tmp_path):
    from study_helpers import dose_report, write

    hu = make_phantom_volume(15, 4, 32).hu
    write_series(tmp_path / "ct", hu)
    import pydicom

    like = pydicom.dcmread(next((tmp_path / "ct").iterdir()))
    write(tmp_path / "sr", [dose_report(like)])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    sr, docs = _run([tmp_path / "sr", tmp_path / "docs"], tmp_path / "o")
    assert not sr.ok and "no axial CT image series" in sr.message
    assert "structured report" in sr.message
    assert not docs.ok and "holds no DICOM image files" in docs.message


def test_a_classic_multiframe_ct_is_placed_by_its_spacing_or_refused(tmp_path):
    import pydicom

    from lungmtl.data.io import read_image
    from lungmtl.errors import InputError

    hu = make_phantom_volume(16, 5, 64).hu
    write_series(tmp_path / "ct", hu)
    files = sorted((tmp_path / "ct").iterdir())
    ds = pydicom.dcmread(files[0])
    frames = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    ds.NumberOfFrames = len(frames)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.SpacingBetweenSlices = 2.5
    ds.save_as(tmp_path / "multi.dcm")
    series = read_image(tmp_path / "ct")
    with pytest.warns(UserWarning, match="placed 2.5 mm apart"):
        multi = read_image(tmp_path / "multi.dcm")
    assert np.array_equal(multi.array, series.array)
    assert np.allclose(multi.affine, series.affine)
    del ds.SpacingBetweenSlices, ds.SliceThickness
    ds.save_as(tmp_path / "nospacing.dcm")
    with pytest.raises(InputError, match=r"nospacing.dcm.*without SpacingBetweenSlices"):
        read_image(tmp_path / "nospacing.dcm")


def test_resume_skips_the_finished_series_of_a_study_without_reading_them(tmp_path, monkeypatch):
    hu = make_phantom_volume(17, 5, 64).hu
    write_series(tmp_path / "study" / "a", hu)
    write_series(tmp_path / "study" / "b", hu, series="1.2.826.0.1.3680043.99.9")
    first = _run([tmp_path / "study"], tmp_path / "o")
    assert [r.ok for r in first] == [True, True] and first[0].name != first[1].name
    import lungmtl.predict.study as study

    def no_read(*a, **k):
        raise AssertionError("a finished series was read again")

    monkeypatch.setattr(study, "series_volume", no_read)
    again = _run([tmp_path / "study"], tmp_path / "o", resume=True)
    assert [r.name for r in again] == [r.name for r in first]
    assert all(r.ok and r.message == "done before" for r in again), again


def test_a_scout_sorted_first_does_not_stand_for_its_series(tmp_path):
    hu = make_phantom_volume(18, 6, 64).hu
    write_series(tmp_path / "ct", hu)
    _scout(tmp_path / "ct", name="a_scout.dcm", localizer=False)  # first by name, untagged
    (r,) = _run([tmp_path / "ct"], tmp_path / "o")
    assert r.ok, r.message
    assert r.summary["n_slices"] == 6 and r.summary["input"]["kernel"] == ""
    assert any("localizer (scout) image(s) left out" in w for w in r.summary["warnings"])


def test_resume_with_another_series_predicts_that_series(tmp_path):
    hu = make_phantom_volume(19, 5, 64).hu
    write_series(tmp_path / "study" / "a", hu)
    write_series(tmp_path / "study" / "b", hu[::-1], series="1.2.826.0.1.3680043.99.9")
    import pydicom

    for k, sub in enumerate(("a", "b")):
        for f in (tmp_path / "study" / sub).iterdir():
            ds = pydicom.dcmread(f)
            ds.SeriesNumber = k + 2
            ds.save_as(f)
    (first,) = _run([tmp_path / "study"], tmp_path / "o", series="2")
    (second,) = _run([tmp_path / "study"], tmp_path / "o", series="3", resume=True)
    assert first.name == second.name == "study"
    assert second.message != "done before"
    assert second.summary["input"]["series_uid"] == "1.2.826.0.1.3680043.99.9"
    (third,) = _run([tmp_path / "study"], tmp_path / "o", series="3", resume=True)
    assert third.message == "done before"


def _zip_of(folder, archive, extra=()):
    import zipfile

    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"S1/{f.name}")
        for name, data in extra:
            z.writestr(name, data)
    return archive


def test_zips_that_python_cannot_read_or_that_are_damaged_say_so(tmp_path):
    import tempfile

    hu = make_phantom_volume(20, 6, 64).hu
    write_series(tmp_path / "ct", hu)
    # Deflate64 (Windows Explorer's choice for large files): method 9 in both headers.
    raw = bytearray(_zip_of(tmp_path / "ct", tmp_path / "d64.zip").read_bytes())
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = raw.find(sig)
        while at >= 0:
            raw[at + offset : at + offset + 2] = (9).to_bytes(2, "little")
            at = raw.find(sig, at + 4)
    (tmp_path / "d64.zip").write_bytes(bytes(raw))
    # One member's deflate data damaged: that slice is left out, so the series has a gap.
    damaged = bytearray(_zip_of(tmp_path / "ct", tmp_path / "bad.zip").read_bytes())
    third = damaged.find(b"PK\x03\x04", damaged.find(b"PK\x03\x04", 4) + 4)
    damaged[third + 200 : third + 260] = b"\xff" * 60
    (tmp_path / "bad.zip").write_bytes(bytes(damaged))
    # A file and a folder of one name, and a member escaping the folder.
    escaped = f"escaped-{tmp_path.name}.dcm"
    _zip_of(tmp_path / "ct", tmp_path / "clash.zip", [("S1", b"x"), (f"../{escaped}", b"x")])
    d64, bad, clash = _run(
        [tmp_path / "d64.zip", tmp_path / "bad.zip", tmp_path / "clash.zip"], tmp_path / "o"
    )
    assert not d64.ok and "d64.zip" in d64.message and "7-Zip" in d64.message
    assert not bad.ok and "missing slices" in bad.message
    assert "bad.zip!S1" in bad.message and "lungmtl-zip-" not in bad.message
    assert clash.ok and clash.summary["n_slices"] == 6
    assert any("unsafe or clashing paths left out" in w for w in clash.summary["warnings"])
    assert not (Path(tempfile.gettempdir()) / escaped).exists()
    assert not list(Path(tempfile.gettempdir()).glob("lungmtl-zip-*/S1/f000.dcm"))


def test_a_study_folder_with_a_preview_picture_is_read_as_a_study(tmp_path):
    hu = make_phantom_volume(21, 6, 64).hu
    write_series(tmp_path / "study" / "DICOM" / "S1", hu)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "study" / "thumbnail.jpg")
    (r,) = _run([tmp_path / "study"], tmp_path / "o")
    assert r.ok and r.summary["input"]["kind"] == "DICOM series" and r.summary["n_slices"] == 6


def test_a_malformed_header_fails_its_own_input_only(tmp_path):
    hu = make_phantom_volume(22, 6, 64).hu
    write_series(tmp_path / "bad", hu)
    write_series(tmp_path / "good", hu)
    for f in sorted((tmp_path / "bad").iterdir()):  # orientation text made letters
        raw = bytearray(f.read_bytes())
        at = raw.find(b"\x20\x00\x37\x00DS") + 8
        n = int.from_bytes(raw[at - 2 : at], "little")
        raw[at : at + n] = bytes(ord("x") if c != ord("\\") else c for c in raw[at : at + n])
        f.write_bytes(bytes(raw))
    bad, good = _run([tmp_path / "bad", tmp_path / "good"], tmp_path / "o")
    assert good.ok and not bad.ok, bad.message
    assert "f000.dcm" in bad.message and "ImageOrientationPatient" in bad.message


def test_a_dicom_folder_layout_refuses_a_multiframe_file_by_name(tmp_path):
    import pydicom

    from lungmtl.data.layouts import from_dicom_folder
    from lungmtl.errors import InputError

    hu = make_phantom_volume(23, 4, 64).hu
    write_series(tmp_path / "ct", hu)
    files = sorted((tmp_path / "ct").iterdir())
    ds = pydicom.dcmread(files[0])
    ds.NumberOfFrames = 4
    ds.PixelData = np.stack([pydicom.dcmread(f).pixel_array for f in files]).tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(tmp_path / "mf" / "multi.dcm")
    with pytest.raises(InputError, match=r"multi.dcm.*multi-frame CT file"):
        from_dicom_folder(tmp_path / "mf", label="healthy")
