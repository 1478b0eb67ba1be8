"""One training epoch: sample order, augmentation, the EMA update (lungmtl.training.epoch)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.swa_utils import AveragedModel
from training_helpers import tiny_config

from lungmtl.config import load_config
from lungmtl.training import fit
from lungmtl.training.epoch import ema_update


def test_ema_forgets_the_initial_state_quickly():
    """A fixed decay of 0.99 keeps 0.99**100 = 37% of the initial state after 100 updates (an
    initial batch-norm variance of 1 against a learnt 0.004 breaks the averaged model); the
    warm-up leaves (almost) none."""
    net = torch.nn.BatchNorm2d(3)
    ema = AveragedModel(net, multi_avg_fn=ema_update(0.99), use_buffers=True)
    ema.update_parameters(net)
    for _ in range(100):
        net.running_var.fill_(0.004)
        net.num_batches_tracked += 1
        ema.update_parameters(net)
    assert torch.all(ema.module.running_var < 0.004 * 1.05), ema.module.running_var
    assert int(ema.module.num_batches_tracked) == 100
    # Once warmed up (t >= 890 for 0.99) it is the configured decay: a new value moves it by 1%.
    ema.n_averaged.fill_(10_000)
    net.running_var.fill_(1.004)
    ema.update_parameters(net)
    torch.testing.assert_close(ema.module.running_var, torch.full((3,), 0.014), rtol=2e-2, atol=0)


def test_epoch_order_draws_a_share_of_label_only_slices():
    from lungmtl.training.epoch import epoch_order

    has_mask = torch.tensor([True] * 6 + [False] * 10)
    full = epoch_order(has_mask, 2, torch.Generator().manual_seed(0))
    assert sorted(full.tolist()) == sorted(list(range(16)) * 2)
    seen = set()
    for epoch in range(4):
        order = epoch_order(has_mask, 1, torch.Generator().manual_seed(epoch), 0.3)
        rows = order.tolist()
        assert len(rows) == len(set(rows)) == 6 + 3  # every masked slice, ceil(0.3 x 10) others
        assert set(range(6)) <= set(rows)
        seen |= set(rows) - set(range(6))
    assert len(seen) > 3, "the label-only share must change from epoch to epoch"
    cfg = load_config(overrides=["train.label_only_fraction=0"])
    with pytest.raises(ValueError, match="label_only_fraction"):
        fit(cfg, "/nonexistent-run-dir")


@pytest.mark.slow
def test_flips_and_intensity_augmentation_train_reproducibly(phantom, tmp_path):
    """The new augmentations draw from the seeded generator: same seed, same weights."""
    aug = {"augment.flip_lr": 0.5, "augment.flip_ud": 0.5, "augment.intensity": 0.5}
    cfg = tiny_config([phantom], tmp_path / "cache", **{"train.epochs": 1}, **aug)
    a = fit(cfg, tmp_path / "a", progress=False)
    b = fit(cfg, tmp_path / "b", progress=False)
    plain = fit(
        tiny_config([phantom], tmp_path / "cache", **{"train.epochs": 1}),
        tmp_path / "c",
        progress=False,
    )
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_healthy_slices_without_masks_train_the_decoder_with_empty_masks(tmp_path):
    """train.healthy_empty_masks: label-only healthy slices enter the segmentation term."""
    import pandas as pd

    from lungmtl.data.phantom import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "d", n_patients=6, n_slices=4, size=64, seed=2)
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest["label"] == "healthy", ["mask", "mask_multiclass"]] = ""
    manifest.to_csv(data / "manifest.csv", index=False)
    runs = {}
    for on in (False, True):
        cfg = tiny_config(
            [data],
            tmp_path / "cache",
            **{"train.epochs": 1, "augment.enabled": False, "train.healthy_empty_masks": on},
        )
        runs[on] = fit(cfg, tmp_path / f"r{on}", progress=False).history[0]
    # the same seed and order: only the samples of the segmentation term differ
    assert runs[True]["train_seg_loss"] != runs[False]["train_seg_loss"]
