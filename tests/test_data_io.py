"""Tests for lungmtl.data.io."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_helpers import write_dicom
from PIL import Image

from lungmtl.data.io import read_image, read_mask, write_mask_like
from lungmtl.errors import InputError

RNG = np.random.default_rng(0)


def test_npy_kind_heuristic(tmp_path: Path) -> None:
    np.save(tmp_path / "hu.npy", np.full((4, 5), -1000.0))
    np.save(tmp_path / "8b.npy", np.full((2, 4, 5), 10, dtype=np.uint8))
    assert read_image(tmp_path / "hu.npy").kind == "hu"
    vol = read_image(tmp_path / "8b.npy")
    assert vol.kind == "8bit" and vol.array.shape == (2, 4, 5) and vol.array.dtype == np.float32


def test_write_mask_like_nifti_goes_back_to_the_file_order(tmp_path: Path) -> None:
    shape = (4, 6, 3)
    affine = np.array([[-0.7, 0, 0, 5], [0, 0, 0.8, -3], [0, 2.0, 0, 7], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16) - 1000, affine), tmp_path / "ct.nii.gz")
    ref = read_image(tmp_path / "ct.nii.gz")
    mask = np.zeros(ref.array.shape, np.uint8)
    mask[1, 2, 0] = 1
    write_mask_like(mask, ref, tmp_path / "out" / "m.nii.gz")
    out = nib.load(tmp_path / "out" / "m.nii.gz")
    assert out.shape == shape and np.allclose(out.affine, affine)
    (hit,) = np.argwhere(np.asarray(out.dataobj) == 1)
    np.testing.assert_allclose(out.affine @ [*hit, 1], ref.affine @ [1, 2, 0, 1])
    assert read_mask(tmp_path / "out" / "m.nii.gz", 1)[2, 0] == 1  # and it reads back aligned


def test_write_mask_like_for_2d_and_bad_shape(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "a.png")
    ref = read_image(tmp_path / "a.png")
    write_mask_like(np.ones((5, 4), np.uint8), ref, tmp_path / "a_mask.nii.gz")
    assert nib.load(tmp_path / "a_mask.nii.gz").shape == (1, 5, 4)
    with pytest.raises(InputError, match="does not match"):
        write_mask_like(np.ones((4, 4), np.uint8), ref, tmp_path / "b.nii.gz")
    with pytest.raises(InputError, match="NIfTI"):
        write_mask_like(np.ones((5, 4), np.uint8), ref, tmp_path / "b.png")


def test_read_mask_png_and_volume(tmp_path: Path) -> None:
    m = np.zeros((4, 4), np.uint8)
    m[1:3, 1:3] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), m // 255)
    multi = np.array([[0, 1], [2, 0]], np.uint8)
    Image.fromarray(multi).save(tmp_path / "multi.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "multi.png"), multi)
    vol = np.zeros((3, 4, 2), np.uint8)  # RAS: z is the last stored axis
    vol[0, 0, 1] = 3
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    z1 = read_mask(tmp_path / "v.nii.gz", 1)
    assert z1.shape == (4, 3) and z1[3, 2] == 3 and z1.sum() == 3
    assert read_mask(tmp_path / "v.nii.gz").shape == (2, 4, 3)
    with pytest.raises(InputError, match="outside"):
        read_mask(tmp_path / "v.nii.gz", 2)


def test_cache_rereads_only_changed_files(tmp_path: Path) -> None:
    p = tmp_path / "v.npy"
    np.save(p, np.zeros((2, 3, 3)))
    a, b = read_image(p), read_image(p)
    assert a is b and not a.array.flags.writeable
    np.save(p, np.ones((2, 3, 3)))
    os.utime(p, ns=(1, 10**18))  # make sure the mtime differs even on coarse file systems
    assert read_image(p).array.max() == 1.0


def _write_bad(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    png = tmp_path / "trunc.png"
    Image.fromarray(RNG.integers(0, 255, (64, 64), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:200])
    nii = tmp_path / "bad.nii.gz"
    nii.write_bytes(gzip.compress(b"not a nifti header" * 30))
    ok = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(RNG.normal(size=(32, 32, 8)).astype(np.float32), np.eye(4)), ok)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(ok.read_bytes()[:-2000])
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.0, np.nan], [1.0, 2.0]]))
    inf_nii = tmp_path / "inf.nii"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), np.inf, np.float32), np.eye(4)), inf_nii)
    four = tmp_path / "four.npy"
    np.save(four, np.zeros((2, 2, 2, 2)))
    one = tmp_path / "one.npy"
    np.save(one, np.zeros(5))
    dcm = tmp_path / "trunc.dcm"
    write_dicom(dcm, np.zeros((8, 8), np.uint16), z=0, series="1", instance=1)
    dcm.write_bytes(dcm.read_bytes()[:-50])
    (tmp_path / "empty").mkdir()
    (tmp_path / "notdicom").mkdir()
    (tmp_path / "notdicom" / "README").write_text("hello")
    (tmp_path / "x.bmpx").write_bytes(b"\0" * 10)
    return {
        "truncated png": (png, "cannot read image"),
        "garbage nifti": (nii, "cannot read NIfTI"),
        "truncated nifti": (cut, "cannot read NIfTI"),
        "nan npy": (nan, "NaN"),
        "inf nifti": (inf_nii, "NaN or infinite"),
        "4d npy": (four, "2D slice or 3D"),
        "1d npy": (one, "2D slice or 3D"),
        "truncated dicom": (dcm, "DICOM"),
        "empty folder": (tmp_path / "empty", "empty folder"),
        "folder without dicom": (tmp_path / "notdicom", "no DICOM"),
        "unknown suffix": (tmp_path / "x.bmpx", "unknown image type"),
        "missing file": (tmp_path / "nope.png", "cannot open"),
    }


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    for what, (path, msg) in _write_bad(tmp_path).items():
        with pytest.raises(InputError) as e:
            read_image(path)
        assert str(path) in str(e.value) and msg in str(e.value), what


def test_write_mask_like_replaces_the_file_atomically(tmp_path, monkeypatch) -> None:
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "a.png")
    ref = read_image(tmp_path / "a.png")
    target = tmp_path / "out" / "mask.nii.gz"
    write_mask_like(np.ones((5, 4), np.uint8), ref, target)
    before = target.read_bytes()

    def disk_full(img, filename):  # writes part of the file, then fails
        Path(filename).write_bytes(b"\x1f\x8b half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_mask_like(np.zeros((5, 4), np.uint8), ref, target)
    assert target.read_bytes() == before  # the old mask is whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.nii.gz"]  # no temp file left
