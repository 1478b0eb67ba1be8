"""Tests for lungmtl.data.dicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from data_helpers import (
    RNG,
    dicom_series,
    write_dicom,
)

from lungmtl.data import io
from lungmtl.data.image import ImageData
from lungmtl.data.io import read_image
from lungmtl.errors import InputError


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


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the junk before failing
def test_corrupt_dicom_header_is_an_input_error(tmp_path: Path) -> None:
    p = tmp_path / "junk.dcm"
    p.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(InputError, match=r"junk\.dcm"):
        read_image(p)


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


@pytest.mark.slow
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


def test_slice_keys_order_by_position_else_instance_number():
    """One ordering for series reading and for DICOM-folder layouts: positions along the normal
    when every file states one; a malformed one raises when strict, else InstanceNumber wins."""
    import pydicom

    from lungmtl.data.dicom import slice_keys
    from lungmtl.errors import InputError

    def ds(z=None, number=None, iop=(1, 0, 0, 0, 1, 0)):
        d = pydicom.Dataset()
        d.ImageOrientationPatient = list(iop)
        if z is not None:
            d.ImagePositionPatient = [0, 0, z]
        if number is not None:
            d.InstanceNumber = number
        return d

    items = [(Path(f"{k}.dcm"), ds(z, n)) for k, (z, n) in enumerate([(5.0, 1), (-2.5, 3), (0, 2)])]
    assert slice_keys(items) == ([5.0, -2.5, 0.0], True)
    no_pos = [(Path("a.dcm"), ds(None, 7)), (Path("b.dcm"), ds(None, None))]
    assert slice_keys(no_pos) == ([7.0, 1.0], False)
    bad = [(Path("bad.dcm"), ds(1.0, 2, iop=(1, 0, 0, 1, 0, 0))), (Path("ok.dcm"), ds(2.0, 1))]
    with pytest.raises(InputError, match=r"bad\.dcm.*parallel"):
        slice_keys(bad)
    assert slice_keys(bad, strict=False) == ([2.0, 1.0], False)
