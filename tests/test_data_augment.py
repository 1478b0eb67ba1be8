"""Tests for lungmtl.data.augment."""

from __future__ import annotations

import torch

from lungmtl.data.augment import apply_affine, random_affine_matrices


def test_augmentation_moves_image_and_mask_together():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(8, 1, 32, 32)
    img[:, :, 8:14, 18:26] = 1.0
    mask = (img > 0.5).float()
    mats = random_affine_matrices(8, rot90=1.0, shift=0.1, zoom=(0.9, 1.1), shear=10, generator=g)
    out, m = apply_affine(img, mask, mats)
    assert out.shape == img.shape and m.shape == mask.shape
    assert set(m.unique().tolist()) <= {0.0, 1.0}  # nearest keeps the mask binary
    # where the warped mask is set, the warped image is bright, and vice versa
    inside = out[m.bool()]
    assert inside.mean() > 0.8
    assert out[~m.bool()].mean() < 0.1


def test_rot90_matrix_is_an_exact_quarter_turn():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    mats = random_affine_matrices(
        1,
        rot90=1.0,
        shift=0.0,
        zoom=(1.0, 1.0),
        shear=0.0,
        generator=torch.Generator().manual_seed(1),
    )
    out, _ = apply_affine(x, None, mats)
    assert any(torch.allclose(out[0, 0], torch.rot90(x[0, 0], k)) for k in (1, 3))


def test_flips_move_image_and_mask_together():
    from lungmtl.data.augment import apply_affine, random_flip_matrices, with_flips

    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 2:5, 1:4] = 1.0
    mask = x.clone()
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(4, 1, 1)
    flips = random_flip_matrices(4, lr=1.0, ud=0.0)
    out, m = apply_affine(x, mask, with_flips(eye, flips))
    assert torch.allclose(out, x.flip(-1), atol=1e-5) and torch.equal(m, mask.flip(-1))
    both = random_flip_matrices(4, lr=1.0, ud=1.0)
    out, _ = apply_affine(x, None, with_flips(eye, both))
    assert torch.allclose(out, x.flip(-1).flip(-2), atol=1e-5)
    none = random_flip_matrices(4, lr=0.0, ud=0.0)
    assert torch.allclose(apply_affine(x, None, with_flips(eye, none))[0], x, atol=1e-5)


def test_intensity_augmentation_is_seeded_and_changes_only_intensities():
    from lungmtl.data.augment import random_intensity

    x = torch.rand(6, 1, 24, 24)
    a = random_intensity(x, p=1.0, generator=torch.Generator().manual_seed(3))
    b = random_intensity(x, p=1.0, generator=torch.Generator().manual_seed(3))
    c = random_intensity(x, p=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert (a - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every slice changed
    off = random_intensity(x, p=0.0, noise=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(off, x)


def test_appearance_augmentation_is_seeded_off_by_default_and_keeps_the_range():
    from lungmtl.data.augment import random_appearance

    x = torch.rand(4, 1, 32, 32) * 0.8 + 0.1
    assert random_appearance(x, generator=torch.Generator().manual_seed(0)) is x
    kw = {"lowres": 1.0, "jpeg": 1.0, "clahe": 1.0}
    a = random_appearance(x, **kw, generator=torch.Generator().manual_seed(1))
    b = random_appearance(x, **kw, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and torch.isfinite(a).all()
    assert (a - x).abs().amax(dim=(1, 2, 3)).min() > 1e-2  # every slice changed
    assert a.min() >= x.min() - 0.05 and a.max() <= x.max() + 0.05  # same intensity range


def test_each_appearance_change_alone():
    from lungmtl.data.augment import random_appearance

    g = torch.Generator
    x = torch.zeros(1, 1, 32, 32)
    x[..., ::2] = 1.0  # stripes one pixel wide: lost at a coarser resolution
    low = random_appearance(x, lowres=1.0, scale=(0.5, 0.5), generator=g().manual_seed(0))
    assert low.std() < 0.2 * x.std()
    ramp = torch.linspace(0, 1, 32).repeat(32, 1)[None, None] ** 3  # a dark image
    eq = random_appearance(ramp, clahe=1.0, generator=g().manual_seed(0))
    assert eq.mean() > ramp.mean() + 0.05  # equalisation brightens a dark histogram
    noisy = ramp + 0.05 * torch.randn(ramp.shape, generator=g().manual_seed(1))
    jp = random_appearance(noisy, jpeg=1.0, quality=(10, 10), generator=g().manual_seed(0))
    assert 0 < (jp - noisy).abs().mean() < 0.1  # lossy, but the same picture
