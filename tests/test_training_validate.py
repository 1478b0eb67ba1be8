"""Validation during training, streamed batch by batch (lungmtl.training.validate)."""

from __future__ import annotations

import pytest
import torch
from training_helpers import tiny_config

from lungmtl.config import to_dict
from lungmtl.data.build import build_from_config
from lungmtl.data.dataset import SliceTensors
from lungmtl.losses import MultiTaskLoss
from lungmtl.models import build_model
from lungmtl.training.validate import validation_metrics


@pytest.mark.parametrize("classes", [1, 3])
def test_validation_is_streamed_batch_by_batch(phantom, tmp_path, classes):
    """The loss is taken batch by batch (no logits of the whole split are kept), and the
    numbers are those of one batch holding the whole split."""
    cfg = tiny_config([phantom], tmp_path / "cache", **{"model.seg_classes": classes})
    ds = build_from_config(cfg, progress=False)
    val = SliceTensors(ds.cache, ds.rows("val"), multiclass=classes > 1)
    assert len(val) > 6
    val.has_mask[[0, 1, 2, 7]] = False  # a batch without masks, one with some
    torch.manual_seed(0)
    model = build_model(cfg.model)
    loss_fn = MultiTaskLoss(**(to_dict(cfg.loss) | {"bce_weight": 0.5}))
    seen: list[int] = []
    loss_fn.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    cpu = torch.device("cpu")
    streamed = validation_metrics(model, val, loss_fn, cpu, 3)
    assert seen and max(seen) <= 3 and sum(seen) == len(val)
    whole = validation_metrics(model, val, loss_fn, cpu, len(val))
    assert seen[-1] == len(val)
    for key, value in whole.items():
        assert streamed[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
