"""Tests for lungmtl.data.raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import (
    RNG,
)
from PIL import Image

from lungmtl.data.io import read_image, read_mask
from lungmtl.errors import InputError


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


def test_png_over_the_decompression_bomb_limit_is_an_input_error(tmp_path, monkeypatch) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as a > 179 Mpx picture does by default
    for read in (read_image, read_mask):
        with pytest.raises(InputError, match=r"huge\.png.*too large"):
            read(tmp_path / "huge.png")
