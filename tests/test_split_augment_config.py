"""Patient-level splits, joint augmentation, and bad settings on the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lungmtl.data.augment import apply_affine, augment_batch, random_affine_matrices
from lungmtl.data.split import assert_patient_disjoint, split_by_patient
from lungmtl.errors import InputError


def _table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for src, n_pat in (("a", 30), ("b", 7), ("c", 2)):
        for p in range(n_pat):
            kind = ["infected", "healthy", "mixed"][p % 3]
            for s in range(int(rng.integers(1, 12))):
                label = kind if kind != "mixed" else ("infected" if s % 2 else "healthy")
                rows.append({"source": src, "patient": f"{src}{p}", "label": label})
    return pd.DataFrame(rows)


def test_split_keeps_patients_whole_and_is_seeded():
    t = _table()
    s = split_by_patient(t, (0.6, 0.2, 0.2), seed=3)
    assert (t.assign(split=s).groupby(["source", "patient"])["split"].nunique() == 1).all()
    assert s.equals(split_by_patient(t, (0.6, 0.2, 0.2), seed=3))
    assert not s.equals(split_by_patient(t, (0.6, 0.2, 0.2), seed=4))


def test_split_fractions_are_close_for_a_large_source():
    t = _table()
    s = split_by_patient(t, (0.6, 0.2, 0.2), seed=0)
    a = s[t["source"] == "a"].value_counts(normalize=True)
    assert abs(a["train"] - 0.6) < 0.12 and abs(a["test"] - 0.2) < 0.12
    # every split of the large source holds both classes
    for part in ("train", "val", "test"):
        assert set(t.loc[(t["source"] == "a") & (s == part), "label"]) == {"infected", "healthy"}


def test_split_rejects_bad_fractions_and_detects_leaks():
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(_table(), (0.5, 0.2, 0.2))
    leaky = pd.DataFrame({"source": ["a", "a"], "patient": ["p", "p"], "split": ["train", "test"]})
    with pytest.raises(AssertionError, match="more than one split"):
        assert_patient_disjoint(leaky)


def test_augmentation_moves_image_and_mask_together():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(8, 1, 32, 32)
    img[:, :, 8:14, 18:26] = 1.0
    mask = (img > 0.5).float()
    out, m = augment_batch(img, mask, rot90=1.0, shift=0.1, zoom=(0.9, 1.1), shear=10, generator=g)
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


def test_bad_devices_and_settings_are_clear_errors_on_the_command_line(tmp_path, capsys):
    from lungmtl.cli import main
    from lungmtl.device import resolve_device

    with pytest.raises(InputError, match="'bogus' is not a device"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    for bad in ("train.grad_accum=0", "train.device=bogus", "model.name=[unet"):
        code = main(["train", "--out", str(tmp_path / "r"), "--set", bad, "-q"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("lungmtl: error:"), (bad, err)
        assert "Traceback" not in err


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
