"""One shared model test over every backbone x attention combination (tiny widths, CPU)."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch

from lungmtl.errors import CheckpointError
from lungmtl.models import (
    MODELS,
    ModelConfig,
    MultiTaskOutput,
    count_parameters,
    create_model,
    load,
    pad_to_multiple,
    save,
)

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


def test_save_load_round_trip(tiny, tmp_path):
    tiny.eval()
    x = torch.randn(2, 1, 32, 32)
    path = save(tiny, tmp_path / "m.pt", note="hello")
    again = load(path)
    assert again.config == tiny.config
    a, b = tiny(x), again(x)
    assert torch.equal(a.seg, b.seg) and torch.equal(a.cls, b.cls)
    # files.atomic_path writes ".m.tmp<pid>.pt" beside m.pt: nothing but m.pt may be left.
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"], "temporary file left behind"


def test_three_class_segmentation():
    m = create_model("unet", seg_classes=3, attention=None, **TINY)
    assert m(torch.randn(1, 1, 32, 32)).seg.shape == (1, 3, 32, 32)


def test_width_multiplier_shrinks_channels():
    cfg = ModelConfig(width_mult=0.25)
    assert cfg.channels == (16, 32, 64, 128, 128)
    assert ModelConfig().channels == (64, 128, 256, 512, 512)


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


def test_unknown_name_and_options_list_valid_ones():
    with pytest.raises(ValueError, match=r"valid:.*resunet"):
        create_model("vgg")
    with pytest.raises(ValueError, match=r"unknown model option.*widthmult"):
        create_model("unet", widthmult=0.5)
    with pytest.raises(ValueError, match="attention"):
        create_model("unet", attention="se")


def test_truncated_and_foreign_checkpoints_fail_clearly(tmp_path):
    m = create_model("unet", **TINY)
    good = save(m, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half\.pt.*(unreadable|truncated)"):
        load(tmp_path / "half.pt")
    torch.save({"state_dict": m.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a lungmtl checkpoint"):
        load(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_loading_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": "lungmtl-checkpoint", "x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="unreadable"):
        load(path)


def test_run_directory_resolves_best_then_last(tmp_path):
    m = create_model("resunet", **TINY)
    save(m, tmp_path / "last.pt")
    assert load(tmp_path).config == m.config
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)


def test_the_shared_types_are_one_and_the_names_match_the_registry():
    """models/base.py holds the output and config types and the one registry (importable from
    lungmtl.models); every name of the registry builds, the baselines as optional extras."""
    from lungmtl.models import base, external, multitask

    assert multitask.ModelConfig is base.ModelConfig is ModelConfig
    assert multitask.MultiTaskOutput is base.MultiTaskOutput is MultiTaskOutput
    assert external.MODELS is multitask.MODELS is base.MODELS is MODELS
    assert BACKBONES == ["resunet", "unet", "unetpp"]
    assert {n: e.extra for n, e in MODELS.items() if e.external} == {
        "smp-unet": "smp",
        "monai-unet": "monai",
    }
