"""Tests for lungmtl.data.nifti."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_helpers import (
    RNG,
)

from lungmtl.data.io import read_image, read_mask, volume_shape
from lungmtl.errors import InputError


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
