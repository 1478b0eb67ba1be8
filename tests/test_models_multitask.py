"""One shared model test over every backbone x attention combination (tiny widths, CPU)."""

from __future__ import annotations

import itertools

import pytest
import torch

from lungmtl.models import MODELS, MultiTaskOutput, count_parameters, create_model, pad_to_multiple

BACKBONES = sorted(n for n, e in MODELS.items() if not e.external)
COMBOS = list(itertools.product(BACKBONES, ["cbam", None]))
TINY = {"width_mult": 0.125, "cls_hidden": (32, 16)}

# Parameter counts of the paper configuration (widths 64-128-256-512, bottleneck 512, 1 input
# channel, 1 segmentation class, head 512-128-2). A change here changes the published model.
PAPER_PARAMS = {
    ("unet", "cbam"): 20_954_029,
    ("unet", None): 20_877_251,
    ("unetpp", "cbam"): 26_081_645,
    ("unetpp", None): 26_004_867,
    ("resunet", "cbam"): 22_127_149,
    ("resunet", None): 22_050_371,
}


@pytest.fixture(params=COMBOS, ids=[f"{n}-{a}" for n, a in COMBOS])
def tiny(request):
    name, attention = request.param
    torch.manual_seed(0)
    return create_model(name, attention=attention, **TINY)


def test_output_shapes_and_type(tiny):
    out = tiny(torch.randn(2, 1, 64, 48))
    assert isinstance(out, MultiTaskOutput)
    assert out.seg.shape == (2, 1, 64, 48)
    assert out.cls.shape == (2, 2)
    assert out.seg.dtype == out.cls.dtype == torch.float32


def test_backward_reaches_every_parameter(tiny):
    tiny.train()
    out = tiny(torch.randn(4, 1, 32, 32))
    (out.seg.mean() + out.cls.mean()).backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached: {missing}"
    zero = [n for n, p in tiny.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f"all-zero gradient: {zero}"


@pytest.mark.parametrize("shape", [(1, 1, 50, 64), (1, 1, 64, 40), (1, 2, 64, 64), (1, 64, 64)])
def test_invalid_input_raises(tiny, shape):
    with pytest.raises(ValueError, match=r"multiples of 16|expected input"):
        tiny(torch.randn(*shape))


def test_pad_to_multiple_makes_any_size_work(tiny):
    x, size = pad_to_multiple(torch.randn(1, 1, 50, 37))
    assert x.shape[-2:] == (64, 48) and size == (50, 37)
    assert tiny.eval()(x).seg.shape[-2:] == (64, 48)


def test_eval_is_deterministic(tiny):
    tiny.eval()
    x = torch.randn(3, 1, 32, 32)
    a, b = tiny(x), tiny(x)
    assert torch.equal(a.seg, b.seg) and torch.equal(a.cls, b.cls)


def test_three_class_segmentation():
    m = create_model("unet", seg_classes=3, attention=None, **TINY)
    assert m(torch.randn(1, 1, 32, 32)).seg.shape == (1, 3, 32, 32)


@pytest.mark.parametrize(("name", "attention"), COMBOS)
def test_paper_parameter_counts(name, attention):
    assert (
        count_parameters(create_model(name, attention=attention)) == PAPER_PARAMS[(name, attention)]
    )


def test_cbam_adds_parameters_and_changes_output():
    torch.manual_seed(0)
    with_cbam = create_model("unet", attention="cbam", **TINY)
    without = create_model("unet", attention=None, **TINY)
    assert count_parameters(with_cbam) > count_parameters(without)
