"""Ecosystem baselines (MONAI BasicUNet, smp Unet) behind lungmtl's model interface."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from lungmtl.errors import CheckpointError
from lungmtl.explain import grad_cam
from lungmtl.models import MultiTaskOutput, create_model, load, save
from lungmtl.models import checkpoint as ckpt_mod

pytest.importorskip("monai", reason="monai is not installed (pip install 'lungmtl[monai]')")

TINY = {"attention": None, "width_mult": 0.25, "cls_hidden": (16,)}


@pytest.fixture
def monai_net():
    torch.manual_seed(0)
    return create_model("monai-unet", **TINY)


def test_monai_unet_is_multitask_and_trains_both_heads(monai_net):
    x = torch.randn(3, 1, 32, 32)
    out = monai_net(x)
    assert isinstance(out, MultiTaskOutput)
    assert out.seg.shape == (3, 1, 32, 32) and out.cls.shape == (3, 2)
    (out.seg.mean() + out.cls.sum()).backward()
    no_grad = [n for n, p in monai_net.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    # The classifier reads the bottleneck of *this* forward, not a stale one.
    monai_net.eval()
    a = monai_net(x[:1]).cls
    monai_net(torch.randn(2, 1, 32, 32))
    assert torch.equal(monai_net(x[:1]).cls, a)
    # A deep copy (the EMA of the weights is one) reads its own bottleneck.
    twin = copy.deepcopy(monai_net)
    assert torch.equal(twin(x[:1]).cls, a)


def test_monai_unet_checkpoint_round_trip_and_gradcam(monai_net, tmp_path):
    monai_net.eval()
    x = torch.randn(2, 1, 32, 32)
    again = load(save(monai_net, tmp_path / "m.pt"))
    assert again.config == monai_net.config
    assert torch.equal(again(x).seg, monai_net(x).seg)
    cam = grad_cam(again, x)
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).all() and cam.max() <= 1.0


def test_external_options_are_checked():
    with pytest.raises(ValueError, match="no lungmtl attention"):
        create_model("monai-unet", attention="cbam")
    with pytest.raises(ValueError, match="smp-unet only"):
        create_model("monai-unet", attention=None, encoder="resnet18")
    with pytest.raises(ValueError, match="multiples of 16"):
        create_model("monai-unet", **TINY)(torch.randn(1, 1, 40, 40))


def test_missing_library_names_the_extra(tmp_path, monkeypatch):
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        with pytest.raises(ImportError, match=r"lungmtl\[smp\]"):
            create_model("smp-unet", attention=None)
    # A checkpoint of a baseline whose library is missing fails as a checkpoint error.
    path = save(create_model("monai-unet", **TINY), tmp_path / "m.pt")

    def missing(config):
        raise ImportError("model 'monai-unet' needs monai; pip install 'lungmtl[monai]'")

    monkeypatch.setattr(ckpt_mod, "build_model", missing)
    with pytest.raises(CheckpointError, match=r"lungmtl\[monai\]"):
        load(path)


def test_smp_unet_with_aux_head():
    pytest.importorskip(
        "segmentation_models_pytorch",
        reason="segmentation_models_pytorch needs torchvision (pip install 'lungmtl[smp]')",
        exc_type=ImportError,
    )
    torch.manual_seed(0)
    net = create_model("smp-unet", attention=None, encoder="resnet18", width_mult=0.25)
    out = net(torch.randn(2, 1, 64, 64))
    assert out.seg.shape == (2, 1, 64, 64) and out.cls.shape == (2, 2)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 1, 48, 48))
