"""Readers: DICOM, NIfTI, rasters, .npy -> ImageData in the canonical view; masks; bad input."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungmtl.data import io
from lungmtl.data.io import ImageData, read_image, read_mask, volume_shape, write_mask_like
from lungmtl.errors import InputError

RNG = np.random.default_rng(0)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    z: float,
    series: str,
    instance: int,
    slope: float = 1.0,
    intercept: float = -1024.0,
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.7, 0.8),
) -> None:
    """A minimal uncompressed CT slice (stored value = (HU - intercept) / slope)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = "P1"
    ds.SeriesInstanceUID = series
    ds.SeriesDescription = "chest"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-100.0, -120.0, z]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def dicom_series(folder: Path, zs: list[float], series: str = "1.2.3") -> list[np.ndarray]:
    """Slices whose stored order (file names, InstanceNumber) is the reverse of position order."""
    folder.mkdir(parents=True, exist_ok=True)
    slices = []
    for i, z in enumerate(zs):
        px = RNG.integers(0, 2000, size=(6, 5)).astype(np.uint16)
        write_dicom(folder / f"s{i:02d}.dcm", px, z=z, series=series, instance=len(zs) - i)
        slices.append(px.astype(np.float32) - 1024.0)
    return slices


# ---------------------------------------------------------------- rasters + npy


def test_png_grey_rgb_rgba_give_one_luminance_channel(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(7, 9, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    alpha = np.dstack([rgb, np.zeros((7, 9), np.uint8)])  # fully transparent: alpha must be ignored
    Image.fromarray(alpha, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.tif")
    want = rgb @ np.array([0.299, 0.587, 0.114])
    for name in ("rgb.png", "rgba.png"):
        d = read_image(tmp_path / name)
        assert d.array.shape == (7, 9) and d.array.dtype == np.float32 and d.kind == "8bit"
        assert np.abs(d.array - want).max() <= 1.0
    grey = read_image(tmp_path / "grey.tif")
    np.testing.assert_array_equal(grey.array, rgb[..., 0])
    assert grey.affine is None and grey.spacing == (1.0, 1.0)


def test_16bit_png_is_min_max_scaled(tmp_path: Path) -> None:
    a = np.array([[0, 1000], [3000, 4000]], dtype=np.uint16) + 24
    Image.fromarray(a).save(tmp_path / "a.png")
    d = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(d.array, (a - 24.0) * 255.0 / 4000.0, atol=1e-3)
    assert d.kind == "8bit"


def test_npy_kind_heuristic(tmp_path: Path) -> None:
    np.save(tmp_path / "hu.npy", np.full((4, 5), -1000.0))
    np.save(tmp_path / "8b.npy", np.full((2, 4, 5), 10, dtype=np.uint8))
    assert read_image(tmp_path / "hu.npy").kind == "hu"
    vol = read_image(tmp_path / "8b.npy")
    assert vol.kind == "8bit" and vol.array.shape == (2, 4, 5) and vol.array.dtype == np.float32


# ---------------------------------------------------------------- NIfTI orientation


def test_nifti_ras_volume_comes_out_radiological(tmp_path: Path) -> None:
    data = RNG.normal(size=(4, 5, 3)).astype(np.float32) * 100 - 800  # (x, y, z), RAS+ affine
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.6, 2.0, 1.0])), tmp_path / "v.nii.gz")
    d = read_image(tmp_path / "v.nii.gz")
    # x increases to patient Right, y to Anterior: columns must run R->L, rows A->P.
    np.testing.assert_allclose(d.array, data[::-1, ::-1, :].transpose(2, 1, 0))
    assert d.kind == "hu" and d.spacing == pytest.approx((2.0, 0.6, 0.5))
    assert nib.aff2axcodes(d.affine) == ("S", "P", "L")
    assert volume_shape(tmp_path / "v.nii.gz") == d.array.shape


def test_reorientation_keeps_every_voxels_world_position(tmp_path: Path) -> None:
    shape = (3, 4, 5)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    # An oblique-free but scrambled storage: axes (A->P, S->I, L->R) with odd spacings and offset.
    affine = np.array(
        [[0, 0, 0.9, -30], [-1.1, 0, 0, 40], [0, -2.5, 0, 12], [0, 0, 0, 1]], dtype=float
    )
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "s.nii")
    d = read_image(tmp_path / "s.nii")
    assert nib.aff2axcodes(d.affine) == ("S", "P", "L")
    for new_idx in np.ndindex(d.array.shape):
        old_idx = np.unravel_index(int(d.array[new_idx]), shape)
        np.testing.assert_allclose(d.affine @ [*new_idx, 1], affine @ [*old_idx, 1], atol=1e-9)


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


# ---------------------------------------------------------------- DICOM


def test_dicom_series_sorted_by_position_in_hu_with_world_affine(tmp_path: Path) -> None:
    zs = [10.0, -2.0, 4.0, -8.0, 16.0]  # file order is not position order
    slices = dicom_series(tmp_path / "ser", zs)
    d = read_image(tmp_path / "ser")
    order = np.argsort(zs)
    assert d.kind == "hu" and d.array.shape == (5, 6, 5)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(d.array[k], slices[i])
    assert d.spacing == pytest.approx((6.0, 0.7, 0.8))
    # Pixel (row r, col c) of slice k sits at LPS (-100 + 0.8c, -120 + 0.7r, z) -> RAS (-x, -y, z).
    for k, r, c in [(0, 0, 0), (4, 5, 4), (2, 3, 1)]:
        want = [100 - 0.8 * c, 120 - 0.7 * r, zs[order[k]]]
        np.testing.assert_allclose((d.affine @ [k, r, c, 1])[:3], want, atol=1e-9)
    one = read_image(tmp_path / "ser" / "s00.dcm")  # a single file: the same slice, in HU
    np.testing.assert_array_equal(one.array, d.array[list(order).index(0)])
    k = list(order).index(0)
    np.testing.assert_allclose(one.affine @ [0, 3, 2, 1], d.affine @ [k, 3, 2, 1], atol=1e-9)


def test_dicom_rescale_and_flipped_rows(tmp_path: Path) -> None:
    px = np.arange(12, dtype=np.uint16).reshape(3, 4)
    # Column direction pointing anterior (-y in LPS): rows must be flipped to run A->P.
    write_dicom(
        tmp_path / "a.dcm",
        px,
        z=0,
        series="9",
        instance=1,
        slope=2.0,
        intercept=-1000,
        iop=(1, 0, 0, 0, -1, 0),
    )
    d = read_image(tmp_path / "a.dcm")
    np.testing.assert_array_equal(d.array, (px[::-1] * 2.0 - 1000).astype(np.float32))


def test_dicom_folder_with_two_series_names_them(tmp_path: Path) -> None:
    dicom_series(tmp_path / "mix", [0.0, 2.0], series="1.1")
    (tmp_path / "mix" / "s00.dcm").rename(tmp_path / "mix" / "a.dcm")
    (tmp_path / "mix" / "s01.dcm").rename(tmp_path / "mix" / "b.dcm")
    dicom_series(tmp_path / "mix", [0.0, 2.0, 4.0], series="2.2")
    with pytest.raises(InputError, match=r"2 DICOM series.*1\.1 \(2 files\).*2\.2 \(3 files\)"):
        read_image(tmp_path / "mix")
    assert read_image(tmp_path / "mix", series="2.2").array.shape[0] == 3


def test_dicom_gaps_warn_or_raise(tmp_path: Path) -> None:
    dicom_series(tmp_path / "gap", [0.0, 2.0, 4.0, 10.0])
    with pytest.warns(UserWarning, match="gaps"):
        read_image(tmp_path / "gap")
    with pytest.raises(InputError, match="gaps"):
        read_image(tmp_path / "gap", gaps="error")
    dicom_series(tmp_path / "even", [0.0, 2.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "even")


# ---------------------------------------------------------------- masks


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


# ---------------------------------------------------------------- cache


def test_cache_rereads_only_changed_files(tmp_path: Path) -> None:
    p = tmp_path / "v.npy"
    np.save(p, np.zeros((2, 3, 3)))
    a, b = read_image(p), read_image(p)
    assert a is b and not a.array.flags.writeable
    np.save(p, np.ones((2, 3, 3)))
    os.utime(p, ns=(1, 10**18))  # make sure the mtime differs even on coarse file systems
    assert read_image(p).array.max() == 1.0


# ---------------------------------------------------------------- bad input


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


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the junk before failing
def test_corrupt_dicom_header_is_an_input_error(tmp_path: Path) -> None:
    p = tmp_path / "junk.dcm"
    p.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(InputError, match=r"junk\.dcm"):
        read_image(p)


def _zero_affine_nifti(path: Path) -> None:
    img = nib.Nifti1Image(np.full((4, 5, 3), -1000.0, np.float32), np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.zeros((4, 4)), code=1)  # all-zero sform: no axis can be found
    nib.save(nib.Nifti1Image(img.dataobj, None, img.header), path)


def test_nifti_without_usable_axes_is_an_input_error(tmp_path: Path) -> None:
    p = tmp_path / "noaxes.nii.gz"
    _zero_affine_nifti(p)
    for read in (read_image, volume_shape, read_mask):
        with pytest.raises(InputError, match=r"noaxes\.nii\.gz.*affine"):
            read(p)


def test_dicom_with_three_orientation_values_is_an_input_error(tmp_path: Path) -> None:
    px = RNG.integers(0, 2000, size=(6, 5)).astype(np.uint16)
    write_dicom(tmp_path / "one.dcm", px, z=0.0, series="1.2", instance=1, iop=(1, 0, 0))
    with pytest.raises(InputError, match=r"one\.dcm.*ImageOrientationPatient"):
        read_image(tmp_path / "one.dcm")
    (tmp_path / "s").mkdir()
    for i in range(3):
        write_dicom(
            tmp_path / "s" / f"{i}.dcm", px, z=2.0 * i, series="1.3", instance=i, iop=(1, 0, 0)
        )
    with pytest.raises(InputError, match=r"0\.dcm.*ImageOrientationPatient"):
        read_image(tmp_path / "s")


def test_png_over_the_decompression_bomb_limit_is_an_input_error(tmp_path, monkeypatch) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as a > 179 Mpx picture does by default
    for read in (read_image, read_mask):
        with pytest.raises(InputError, match=r"huge\.png.*too large"):
            read(tmp_path / "huge.png")


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


# ---------------------------------------------------------------- real data


def test_real_covid_ct_md_volume_is_position_ordered_hu(real_data: Path) -> None:
    folder = real_data / "covid-ct-md" / "P001"
    vol = read_image(folder)
    assert isinstance(vol, ImageData) and vol.kind == "hu" and vol.array.ndim == 3
    files = sorted(folder.glob("*.dcm"))
    assert vol.array.shape[0] == len(files)
    z_world = (
        vol.affine @ np.c_[np.arange(len(files)), np.zeros((len(files), 2)), np.ones(len(files))].T
    )[2]
    assert np.all(np.diff(z_world) > 0)  # inferior -> superior
    heads = {f: pydicom.dcmread(f, stop_before_pixels=True) for f in files}
    by_z = sorted(files, key=lambda f: float(heads[f].ImagePositionPatient[2]))
    assert np.all(np.diff([float(heads[f].ImagePositionPatient[2]) for f in by_z]) > 0)
    for k in (0, len(files) // 2, len(files) - 1):
        one = read_image(by_z[k])
        np.testing.assert_array_equal(one.array, vol.array[k])
        assert one.array[:32, :32].mean() < -900  # air in the corner
        np.testing.assert_allclose(float(heads[by_z[k]].ImagePositionPatient[2]), z_world[k])
    assert (vol.array[len(files) // 2] > 0).any()  # soft tissue / bone above 0 HU
    io.clear_cache()
