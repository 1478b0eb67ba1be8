"""Scans as hospitals and datasets hand them over (issue 24): scouts inside a series, a folder
of slice images, and what summary.json says was read and assumed."""

from __future__ import annotations

import numpy as np
import pandas as pd
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
