"""Grad-CAM (lungmtl.explain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lungmtl.config import RunConfig, from_dict
from lungmtl.data.build import build_from_config
from lungmtl.explain import default_layer, grad_cam
from lungmtl.models import MultiTaskOutput, checkpoint, create_model
from lungmtl.models.shipped import DEFAULT


class TwoDetectors(nn.Module):
    """Channel 0 responds to bright blobs, channel 1 to dark blobs; the classifier reads only
    the channel ``use``. Grad-CAM must point at the blob the decision depends on."""

    def __init__(self, use: int):
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
        self.relu = nn.ReLU()
        self.use = use

    def forward(self, x):
        f = self.relu(self.features(x))
        score = f[:, self.use].mean(dim=(1, 2))
        return MultiTaskOutput(x, torch.stack([torch.zeros_like(score), score], dim=1))


def _two_blobs(bright_at, dark_at, size=32):
    x = torch.zeros(1, 1, size, size)
    (r, c), (r2, c2) = bright_at, dark_at
    x[0, 0, r : r + 6, c : c + 6] = 1.0
    x[0, 0, r2 : r2 + 6, c2 : c2 + 6] = -1.0
    return x


def _peak(cam):
    return np.unravel_index(np.argmax(cam), cam.shape)


def test_grad_cam_follows_the_region_the_decision_depends_on():
    for bright, dark in (((4, 4), (20, 20)), ((22, 6), (3, 25))):
        x = _two_blobs(bright, dark)
        cam = grad_cam(TwoDetectors(use=0), x, layer="relu")[0]
        r, c = _peak(cam)
        assert bright[0] <= r < bright[0] + 6 and bright[1] <= c < bright[1] + 6
        assert cam[dark[0] : dark[0] + 6, dark[1] : dark[1] + 6].max() == 0
        # The same image, a classifier reading the other channel: the map moves to that blob.
        cam = grad_cam(TwoDetectors(use=1), x, layer="relu")[0]
        r, c = _peak(cam)
        assert dark[0] <= r < dark[0] + 6 and dark[1] <= c < dark[1] + 6
        # Evidence against "infected" is the healthy target's evidence.
        anti = grad_cam(TwoDetectors(use=0), x, layer="relu", target="healthy")[0]
        assert anti.max() == 0


def test_grad_cam_on_the_multitask_net_is_non_trivial_and_cleans_up():
    torch.manual_seed(0)
    model = create_model("unet", width_mult=0.125, cls_hidden=[16, 8])
    x = torch.rand(3, 1, 64, 64)
    x[:, :, 10:30, 10:30] += 1.0
    cam = grad_cam(model, x, batch_size=2)
    assert cam.shape == (3, 64, 64) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1
    assert all(c.std() > 0 for c in cam if c.max() > 0)
    assert any(c.max() == pytest.approx(1.0) for c in cam)
    assert not default_layer(model)._forward_hooks  # the hook is removed afterwards
    named = grad_cam(model, x[:1], layer="encoder.stages.2")
    assert named.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="no layer"):
        grad_cam(model, x[:1], layer="encoder.nope")


def test_grad_cam_reads_the_deepest_map_of_an_encoder_that_returns_a_pyramid():
    """smp encoders return a list of feature maps; Grad-CAM uses the last (deepest) one."""

    class Pyramid(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)

        def forward(self, x):
            f1 = torch.relu(self.a(x))
            return [x, f1, torch.relu(self.b(f1))]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Pyramid()
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            deepest = self.encoder(x)[-1]
            cls = self.head(deepest.mean(dim=(2, 3)))
            return MultiTaskOutput(seg=x, cls=cls)

    torch.manual_seed(0)
    net = Net()
    cam = grad_cam(net, torch.rand(2, 1, 16, 16), layer="encoder")
    assert cam.shape == (2, 16, 16) and np.isfinite(cam).all()
    assert cam.max() == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(DEFAULT is None, reason="this install ships no model")
def test_grad_cam_of_the_shipped_model_leans_on_the_lesions_of_real_slices(real_data, tmp_path):
    """The shipped model's Grad-CAM (first member, stride-8 stage) is brighter inside the
    radiologists' infection masks than in the rest of the lung, on real infected slices, and
    clearly more so than an untrained model's. (A 6-epoch model trained inside the test did this
    before: too weak, its enrichment moved between 1.04 and 1.30 with library versions.)"""
    restored = checkpoint.restore(DEFAULT)
    cfg = from_dict(RunConfig, restored.meta["run_config"], "run_config")
    cfg.data.sources = [str(real_data)]
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.max_slices = 60
    ds = build_from_config(cfg, progress=False)
    t = ds.table
    rows = t[t["has_mask"].astype(bool) & (t["label"] == "infected")]["row"].to_numpy()
    images = torch.from_numpy(np.asarray(ds.cache.images[rows], dtype=np.float32))[:, None]
    masks = ds.cache.masks[rows].astype(bool)
    lungs = ds.cache.lungs[rows].astype(bool)

    def enrichment(model, layer) -> float:
        cam = grad_cam(model, images, layer=layer)
        ratios = [
            c[m].mean() / max(c[lu & ~m].mean(), 1e-6)
            for c, m, lu in zip(cam, masks, lungs, strict=True)
            if m.sum() >= 3 and (lu & ~m).sum() >= 3
        ]
        assert len(ratios) > 50
        return float(np.median(ratios))

    trained = enrichment(restored.model, "members.0.encoder.attn.2")
    torch.manual_seed(0)
    untrained = enrichment(create_model(**cfg.model.to_dict()).eval(), "encoder.attn.2")
    # Measured 2026-12-05 (147 slices): shipped 1.017, untrained 0.912. The 2026-12-02 figures
    # (1.057 vs 0.788) leaned on medseg100's lung masks, which were then a few pixels (its lung
    # crops were not recognised): against their real lungs the enrichment is 1.135 (untrained
    # 1.051), on the other sources 0.875 (0.687). The check that matters is the comparison with
    # the untrained net; docs/model-card.md says how weakly this layer's map is lesion-focused.
    assert trained > 1.0, trained
    assert trained > untrained + 0.05, (trained, untrained)
