"""The run config: round trip, overrides, values as users write them, command-line errors."""

from __future__ import annotations

import pytest
import torch

from lungmtl.config import RunConfig, load_config, save_config, to_dict
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
