"""Checkpoints: save, load, restore, and clear errors for bad files (lungmtl.models.checkpoint)."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch

from lungmtl.errors import CheckpointError
from lungmtl.models import MODELS, ModelConfig, create_model, load, restore, save
from lungmtl.models.ensemble import Ensemble

BACKBONES = sorted(n for n, e in MODELS.items() if not e.external)
COMBOS = list(itertools.product(BACKBONES, ["cbam", None]))
TINY = {"width_mult": 0.125, "cls_hidden": (32, 16)}


@pytest.fixture(params=COMBOS, ids=[f"{n}-{a}" for n, a in COMBOS])
def tiny(request):
    name, attention = request.param
    torch.manual_seed(0)
    return create_model(name, attention=attention, **TINY)


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


def test_restore_reads_once_and_returns_model_config_and_the_rest(tmp_path):
    torch.manual_seed(0)
    members = [create_model("unet", **TINY) for _ in range(2)]
    path = save(Ensemble(members, ["lr"]), tmp_path / "best.pt", run_config={"train": {"seed": 3}})
    model, config, meta, where = restore(tmp_path)
    assert where == path and not model.training
    assert isinstance(model, Ensemble) and model.flips == ("lr",) and len(model.members) == 2
    assert config == members[0].config and isinstance(config, ModelConfig)
    assert meta["run_config"] == {"train": {"seed": 3}}
    assert meta["ensemble"] == {"members": 2, "flips": ["lr"]}
    assert "state_dict" not in meta and "model_config" not in meta
