"""The run config (lungmtl.config): YAML in and out, --set overrides, and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from lungmtl.config import (
    RunConfig,
    apply_overrides,
    check_key,
    comparable,
    from_dict,
    load_config,
    parse_override,
    save_config,
    set_dotted,
    to_dict,
    valid_keys,
)
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.errors import InputError


def test_config_round_trip_overrides_and_errors(tmp_path):
    cfg = load_config(
        overrides=["train.epochs=3", "model.name=resunet", "data.split=[0.7,0.15,0.15]"]
    )
    assert cfg.train.epochs == 3 and cfg.model.name == "resunet"
    assert cfg.data.split == (0.7, 0.15, 0.15)
    path = save_config(cfg, tmp_path / "c.yaml")
    assert to_dict(load_config(path)) == to_dict(cfg)
    with pytest.raises(InputError, match=r"unknown key.*epoch.*valid"):
        load_config(overrides=["train.epoch=3"])
    with pytest.raises(InputError, match="expected int"):
        load_config(overrides=["train.epochs=many"])
    with pytest.raises(InputError, match="unknown model"):
        load_config(overrides=["model.name=vgg"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*YAML"):
        load_config(bad)
    assert isinstance(load_config(), RunConfig)


def test_config_values_as_users_write_them():
    """1e-4 (YAML 1.1 reads it as text), None (Python's null) and broken YAML in --set."""
    cfg = load_config(overrides=["optim.lr=1e-4", "data.balance=None", "train.ema_decay=null"])
    assert cfg.optim.lr == 1e-4 and cfg.data.balance is None and cfg.train.ema_decay is None
    with pytest.raises(InputError, match=r"--set: model.name: value '\[unet' is not valid YAML"):
        load_config(overrides=["model.name=[unet"])
    with pytest.raises(InputError, match="expected float"):
        load_config(overrides=["optim.lr=fast"])


def test_a_wrong_type_names_the_file_the_key_and_the_type(tmp_path):
    bad = tmp_path / "typed.yaml"
    bad.write_text("train:\n  batch_size: [8]\n")
    with pytest.raises(
        InputError, match=r"typed\.yaml\.train\.batch_size: expected int, got \[8\]"
    ):
        load_config(bad)
    with pytest.raises(InputError, match=r"^config\.train: expected a mapping, got 5$"):
        load_config(overrides=["train=5"])
    with pytest.raises(InputError, match=r"config\.train\.device: expected str, got 3"):
        load_config(overrides=["train.device=3"])
    with pytest.raises(
        InputError, match=r"config\.data\.split: expected 3 values, got \[0\.5, 0\.5\]"
    ):
        load_config(overrides=["data.split=[0.5,0.5]"])
    with pytest.raises(InputError, match=r"config\.preprocess\.window: expected float, got 'low'"):
        load_config(overrides=["preprocess.window=[low,400]"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=true", r"config\.train\.epochs: expected int, got True"),
        ("train.epochs=3.0", r"config\.train\.epochs: expected int, got 3\.0"),
        ("optim.lr=true", r"config\.optim\.lr: expected float, got True"),
        ("data.skip_bad=1", r"config\.data\.skip_bad: expected bool, got 1"),
        # the dataclass sections (preprocess, model) read by the same rules
        ("model.width_mult=true", r"config\.model\.width_mult: expected float, got True"),
        ("preprocess.size=64.0", r"config\.preprocess\.size: expected int, got 64\.0"),
        ("preprocess.normalise=1", r"config\.preprocess\.normalise: expected bool, got 1"),
        ("preprocess.kernel=true", r"config\.preprocess\.kernel: expected int, got True"),
        ("model.widths=[8,true]", r"config\.model\.widths: expected int, got \[8, True\]"),
    ],
)
def test_a_boolean_is_no_number_and_a_number_no_boolean(override, message):
    with pytest.raises(InputError, match=message):
        load_config(overrides=[override])


def test_an_unknown_key_at_depth_two_lists_the_allowed_keys():
    with pytest.raises(InputError) as e:
        load_config(overrides=["preprocess.sise=64", "preprocess.kernl=3"])
    assert str(e.value) == (
        "config.preprocess: unknown key(s) ['kernl', 'sise']; valid: ['size', 'window', "
        "'enhance', 'kernel', 'normalise', 'lung_mask', 'reference', 'tissue_reference', "
        "'crop', 'crop_margin']"
    )
    with pytest.raises(InputError, match=r"^config: unknown key\(s\) \['trian'\]; valid: \['data'"):
        load_config(overrides=["trian.epochs=1"])


def test_a_bad_value_is_refused_by_its_validator_naming_the_section():
    with pytest.raises(
        InputError, match=r"^config\.augment: shift must lie in \[0, 1\), got 1\.0$"
    ):
        load_config(overrides=["augment.shift=1"])
    with pytest.raises(InputError, match=r"^config\.model: encoder is an option of smp-unet only"):
        load_config(overrides=["model.encoder=resnet18"])
    with pytest.raises(InputError, match=r"^config\.preprocess: unknown crop 'body'"):
        load_config(overrides=["preprocess.crop=body"])
    with pytest.raises(ValidationError):  # pydantic underneath, the project's error on top
        RunConfig.model_validate({"train": {"epochs": 0}})
    with pytest.raises(InputError, match=r"^run\.yaml\.train: epochs must be an integer >= 1"):
        from_dict(RunConfig, {"train": {"epochs": 0}}, "run.yaml")


def test_values_read_as_before_keep_the_cache_key_and_the_saved_config(tmp_path):
    """Integers where floats belong become floats, lists become tuples: an unchanged config
    gives the same pre-processing dict (the cache key) and the same config.yaml."""
    cfg = load_config(overrides=["preprocess.window=[-1000, 400]", "preprocess.reference=0.1"])
    assert cfg.preprocess == PreprocessConfig()
    assert dataclasses.asdict(cfg.preprocess) == dataclasses.asdict(PreprocessConfig())
    assert type(cfg.preprocess.window[0]) is float and type(cfg.data.split) is tuple
    text = save_config(cfg, tmp_path / "c.yaml").read_text()
    assert (
        text.startswith("data:\n  sources:\n  - ") and "  window:\n  - -1000.0\n  - 400.0\n" in text
    )
    assert list(to_dict(cfg)) == [
        "data",
        "preprocess",
        "model",
        "loss",
        "optim",
        "augment",
        "train",
    ]


def test_valid_keys_and_check_key():
    keys = valid_keys()
    assert keys[0] == "data.sources" and keys[-1] == "train.healthy_empty_masks"
    assert {"model.name", "preprocess.size", "loss.eps", "augment.zoom"} <= set(keys)
    assert check_key("train.seed", "x.yaml") == "train.seed"
    with pytest.raises(
        InputError, match=r"^x\.yaml: unknown config key 'model\.nmae'; valid keys: data"
    ):
        check_key("model.nmae", "x.yaml")


def test_one_override_parser():
    assert parse_override(" model.widths = [8, 16]") == ("model.widths", [8, 16])
    assert set_dotted({}, "a.b.c", 1) == {"a": {"b": {"c": 1}}}
    assert apply_overrides({"train": {"seed": 1}}, ["train.seed=2", "model.name=unet"]) == {
        "train": {"seed": 2},
        "model": {"name": "unet"},
    }
    with pytest.raises(InputError, match=r"^--set: expected key=value, got 'train\.seed'"):
        parse_override("train.seed")
    with pytest.raises(InputError, match=r"^v\.yaml: 'train\.seed\.x': 'seed' is not a section"):
        set_dotted({"train": {"seed": 1}}, "train.seed.x", 2, "v.yaml")


def test_comparable_fills_defaults_and_refuses_what_is_no_run_config():
    old = to_dict(load_config())
    del old["train"]["ema_decay"]  # written before the option existed
    assert comparable(old) == to_dict(load_config())
    assert comparable(old, ("train.seed",))["train"].get("seed") is None
    assert comparable({"train": {"epochs": 0}}) is None and comparable([1]) is None
