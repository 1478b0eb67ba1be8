"""The model config, the one registry and the shared types (lungmtl.models.base)."""

from __future__ import annotations

import pytest

from lungmtl.models import MODELS, ModelConfig, ModelEntry, MultiTaskOutput, create_model

BACKBONES = sorted(n for n, e in MODELS.items() if not e.external)


def test_width_multiplier_shrinks_channels():
    cfg = ModelConfig(width_mult=0.25)
    assert cfg.channels == (16, 32, 64, 128, 128)
    assert ModelConfig().channels == (64, 128, 256, 512, 512)


def test_unknown_name_and_options_list_valid_ones():
    with pytest.raises(ValueError, match=r"valid:.*resunet"):
        create_model("vgg")
    with pytest.raises(ValueError, match=r"unknown model option.*widthmult"):
        create_model("unet", widthmult=0.5)
    with pytest.raises(ValueError, match="attention"):
        create_model("unet", attention="se")


def test_the_shared_types_are_one_and_the_names_match_the_registry():
    """models/base.py holds the output and config types and the one registry (importable from
    lungmtl.models); the networks' modules fill it, the baselines as optional extras."""
    from lungmtl.models import base, external, multitask

    assert multitask.ModelConfig is base.ModelConfig is ModelConfig
    assert multitask.MultiTaskOutput is base.MultiTaskOutput is MultiTaskOutput
    assert external.MODELS is multitask.MODELS is base.MODELS is MODELS
    assert BACKBONES == ["resunet", "unet", "unetpp"]
    assert {n: e.extra for n, e in MODELS.items() if e.external} == {
        "smp-unet": "smp",
        "monai-unet": "monai",
    }


def test_model_config_checks_come_from_the_registry_entry(monkeypatch):
    """No model name is special-cased: what a name may hold and its divisor are its entry's."""
    monkeypatch.setitem(
        MODELS, "toy", ModelEntry(lambda c: None, divisor=8, attention=False, options=("encoder",))
    )
    toy = ModelConfig(name="toy", attention=None, encoder="small")
    assert toy.divisor == 8 and ModelConfig(widths=(4, 8)).divisor == 4
    with pytest.raises(ValueError, match="toy takes no lungmtl attention"):
        ModelConfig(name="toy")
    with pytest.raises(ValueError, match="encoder is an option of smp-unet, toy only, not of unet"):
        ModelConfig(encoder="small")
