"""fit(): run folders, resume, EMA, DDP, divergence, clear failures (lungmtl.training.loop)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from training_helpers import tiny_config

from lungmtl.cli import main
from lungmtl.config import load_config, to_dict
from lungmtl.data.dataset import SliceTensors
from lungmtl.errors import CheckpointError, InputError
from lungmtl.evaluation import evaluate
from lungmtl.losses import MultiTaskLoss
from lungmtl.metrics import CLS_KEYS, SEG_KEYS
from lungmtl.models import checkpoint, create_model
from lungmtl.training import fit
from lungmtl.training.validate import validation_metrics

BASE_KEYS = ("n_slices", "n_infected", "n_healthy", *CLS_KEYS, *SEG_KEYS)


@pytest.mark.slow
def test_resume_reaches_the_same_weights(phantom, tmp_path):
    cache = tmp_path / "cache"
    whole = fit(tiny_config([phantom], cache), tmp_path / "a", progress=False)
    fit(tiny_config([phantom], cache, **{"train.epochs": 1}), tmp_path / "b", progress=False)
    resumed = fit(tiny_config([phantom], cache), tmp_path / "b", resume=True, progress=False)
    assert len(resumed.history) == 2
    a = checkpoint.read(tmp_path / "a" / "last.pt")["state_dict"]
    b = checkpoint.read(tmp_path / "b" / "last.pt")["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert whole.history[-1]["val_loss"] == pytest.approx(resumed.history[-1]["val_loss"], rel=1e-5)


def test_three_class_segmentation_trains_and_is_validated(phantom, tmp_path):
    """Ground-glass (1) and consolidation (2) masks: validation scores the infection they
    outline (any lesion class) instead of refusing masks that are not 0/1."""
    cfg = tiny_config([phantom], tmp_path / "cache", **{"model.seg_classes": 3})
    result = fit(cfg, tmp_path / "run", progress=False)
    val = SliceTensors(result.dataset.cache, result.dataset.rows("val"), multiclass=True)
    assert int(val.mask.max()) == 2  # the validation split does hold consolidation
    dice = [h["val_dice_infected"] for h in result.history]
    assert all(d is not None and 0 <= d <= 1 for d in dice), dice


def test_ema_weights_are_validated_kept_and_resumed(phantom, tmp_path):
    cache = tmp_path / "cache"
    ema = {"train.ema_decay": 0.9}
    # One epoch: best.pt (always epoch 1 here) holds the moving average, last.pt both.
    fit(tiny_config([phantom], cache, **ema, **{"train.epochs": 1}), tmp_path / "b", progress=False)
    last = checkpoint.read(tmp_path / "b" / "last.pt")
    best = checkpoint.read(tmp_path / "b" / "best.pt")
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k != "n_averaged"}
    assert set(averaged) == set(best["state_dict"])
    for k, v in best["state_dict"].items():
        torch.testing.assert_close(v, averaged[k], msg=k)
    name = "encoder.stages.0.0.weight"
    assert not torch.allclose(averaged[name], last["state_dict"][name])
    # Resumed to two epochs: the raw and the averaged weights of an uninterrupted run.
    fit(tiny_config([phantom], cache, **ema), tmp_path / "b", resume=True, progress=False)
    whole = fit(tiny_config([phantom], cache, **ema), tmp_path / "a", progress=False)
    a, b = (checkpoint.read(tmp_path / r / "last.pt") for r in "ab")
    for k in a["ema"]:
        torch.testing.assert_close(a["ema"][k], b["ema"][k], rtol=1e-5, atol=1e-6, msg=k)
    # The validation figures in the history are the averaged model's.
    model = create_model(**a["model_config"])
    model.load_state_dict(
        {k.removeprefix("module."): v for k, v in a["ema"].items() if k != "n_averaged"}
    )
    ds = whole.dataset
    val = SliceTensors(ds.cache, ds.rows("val"))
    loss_fn = MultiTaskLoss(**to_dict(tiny_config([phantom], cache).loss))
    m = validation_metrics(model, val, loss_fn, torch.device("cpu"), 8)
    assert whole.history[-1]["val_loss"] == pytest.approx(m["val_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="ema_decay"):
        fit(tiny_config([phantom], cache, **{"train.ema_decay": 1.0}), tmp_path / "c")


def test_masks_out_of_the_class_range_are_refused_before_training(phantom, tmp_path, monkeypatch):
    """The loss does not check class indices on a GPU (a sync per step): fit checks each
    split's masks once, before the first step. The phantom's masks hold classes 0, 1 and 2."""
    import lungmtl.training.loop as training

    def never(*args, **kwargs):
        raise AssertionError("trained with masks out of range")

    monkeypatch.setattr(training, "train_epoch", never)
    cfg = tiny_config([phantom], tmp_path / "cache", **{"model.seg_classes": 2})
    with pytest.raises(InputError, match=r"train masks \(model.seg_classes = 2\).*\[0, 1\]"):
        fit(cfg, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_a_resumed_run_keeps_its_early_stopping(phantom, tmp_path, monkeypatch):
    """A run that stopped early stays stopped when resumed with more epochs, and the count of
    epochs without improvement carries over an interruption."""
    import lungmtl.training.loop as training

    real = training.validation_metrics
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])  # improves once, then never again

    def falling(*args, **kwargs):
        return {**real(*args, **kwargs), "val_score": next(scores)}

    monkeypatch.setattr(training, "validation_metrics", falling)
    cache = tmp_path / "cache"
    stop2 = {"train.early_stopping": 2, "train.epochs": 6}
    first = fit(tiny_config([phantom], cache, **stop2), tmp_path / "a", progress=False)
    assert [h["epoch"] for h in first.history] == [1, 2, 3]  # best at 1, stopped after 3
    again = fit(tiny_config([phantom], cache, **stop2), tmp_path / "a", resume=True, progress=False)
    assert len(again.history) == 3
    # Interrupted after epoch 2 (one epoch without improvement): one more epoch, then stop.
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    cut = {**stop2, "train.epochs": 2}
    fit(tiny_config([phantom], cache, **cut), tmp_path / "b", progress=False)
    resumed = fit(
        tiny_config([phantom], cache, **stop2), tmp_path / "b", resume=True, progress=False
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


@pytest.mark.slow
def test_resume_accepts_a_checkpoint_from_before_an_option_existed(phantom, tmp_path):
    cfg = tiny_config([phantom], tmp_path / "c", **{"train.epochs": 1})
    fit(cfg, tmp_path / "run", progress=False)
    last = tmp_path / "run" / "last.pt"
    ck = torch.load(last, weights_only=True)
    del ck["run_config"]["train"]["ema_decay"]  # as written by an older lungmtl
    torch.save(ck, last)
    again = fit(
        tiny_config([phantom], tmp_path / "c"), tmp_path / "run", resume=True, progress=False
    )
    assert len(again.history) == 2


@pytest.mark.slow
def test_a_finished_run_is_not_replaced_by_mistake(phantom, tmp_path, capsys):
    cfg = tiny_config([phantom], tmp_path / "c", **{"train.epochs": 1})
    fit(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "best.pt").stat().st_mtime_ns
    with pytest.raises(InputError, match=r"already holds a trained run.*--resume.*--overwrite"):
        fit(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns == before
    sets = ["--set", f"data.sources=['{phantom}']", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    tiny = ["--set", "preprocess.size=64", "--set", "model.width_mult=0.125"]
    args = ["train", "--out", str(tmp_path / "run"), *sets, *tiny, "--set", "train.epochs=1"]
    assert main([*args, "-q"]) != 0
    assert "already holds a trained run" in capsys.readouterr().err
    assert main([*args, "--overwrite", "-q"]) == 0
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns != before


def test_resume_refuses_a_different_config(phantom, tmp_path):
    cfg = tiny_config([phantom], tmp_path / "c", **{"train.epochs": 1})
    fit(cfg, tmp_path / "run", progress=False)
    other = tiny_config([phantom], tmp_path / "c", **{"optim.lr": 0.1})
    with pytest.raises(CheckpointError, match="different config"):
        fit(other, tmp_path / "run", resume=True, progress=False)


@pytest.mark.slow
@pytest.mark.realdata
def test_end_to_end_on_real_slices(real_data, tmp_path):
    cfg = tiny_config(
        [real_data],
        tmp_path / "cache",
        **{
            "data.max_slices": 40,
            "train.epochs": 4,
            "optim.lr_decay": 1.0,
        },
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    h = result.history
    assert h[-1]["train_loss"] < h[0]["train_loss"], [r["train_loss"] for r in h]
    for name in ("config.yaml", "history.csv", "best.pt", "last.pt", "split.csv"):
        assert (tmp_path / "run" / name).exists(), name
    code = main(
        ["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "eval"), "-q"]
    )
    assert code == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in BASE_KEYS:
        assert key in m, key
    assert m["n_slices"] == m["n_infected"] + m["n_healthy"] > 0
    strict = m["slice_truth_only"]  # without the slices of infected (MosMed) studies
    assert strict["n_slices"] == m["n_slices"] - m["n_study_infected"]
    assert strict["n_healthy"] == m["n_healthy"]
    assert set(m["per_source"]) <= {
        "covid-ct-md",
        "covid19-ct-seg20",
        "medseg-covid2",
        "medseg100",
        "mosmed-mid",
    }
    for block in m["per_source"].values():
        assert all(k in block for k in BASE_KEYS)
    assert all(k in m["patient"] for k in CLS_KEYS)
    assert 0.0 <= m["dice_mean"] <= 1.0 and 0.0 <= m["accuracy"] <= 1.0
    # single-class sources report AUC as undefined, not a number
    for block in m["per_source"].values():
        if block["n_healthy"] == 0 or block["n_infected"] == 0:
            assert block["auc"] is None
    for name in ("report.md", "confusion.png", "roc.png", "overlays.png", "predictions.csv"):
        assert (tmp_path / "eval" / name).stat().st_size > 0, name
    # Every infected slice with a mask falls in exactly one lesion-size bin.
    pred = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    n_lesions = int((pred["has_mask"] & (pred["lesion_share"] > 0)).sum())
    assert n_lesions > 0
    assert sum(r["n"] for r in m["dice_by_lesion_size"]) == n_lesions
    test_patients = set(result.dataset.table.query("split == 'test'")["patient"])
    train_patients = set(result.dataset.table.query("split == 'train'")["patient"])
    assert not test_patients & train_patients


def test_corrupt_checkpoint_and_bad_config_fail_clearly(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert (
        main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "e")]) == 2
    )
    assert "best.pt" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"best\.pt"):
        evaluate(tmp_path / "run", tmp_path / "e")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: unet\n  atention: cbam\n")
    with pytest.raises(InputError, match=r"bad\.yaml\.model.*unknown key.*atention"):
        load_config(bad)
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "atention" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_accumulation(phantom, tmp_path):
    """DDP over 2 CPU processes (torchrun, gloo) reaches the weights of 1 process that
    accumulates the same 2 micro-batches per step (dropout off: its masks are per process)."""
    sets = [
        f"data.sources=[{phantom}]",
        f"data.cache_dir={tmp_path / 'cache'}",
        "preprocess.size=32",
        "model.width_mult=0.125",
        "model.cls_hidden=[16, 8]",
        "model.dropout=0.0",
        "train.batch_size=4",
        "train.epochs=1",
        "train.max_steps_per_epoch=3",
        "train.device=cpu",
    ]
    args = [a for s in sets for a in ("--set", s)]
    one = main(
        ["train", *args, "--set", "train.grad_accum=2", "--out", str(tmp_path / "one"), "-q"]
    )
    assert one == 0
    two = main(["train", *args, "--devices", "2", "--out", str(tmp_path / "two"), "-q"])
    assert two == 0
    a = checkpoint.load(tmp_path / "one" / "last.pt")
    b = checkpoint.load(tmp_path / "two" / "last.pt")
    torch.manual_seed(0)  # fit seeds with train.seed (0) before building the model
    init = create_model(**a.config.to_dict())
    moved = 0
    # Parameters must agree. BatchNorm running statistics are per process under DDP (rank 0's
    # micro-batches, broadcast), unlike one process that sees every micro-batch: not compared.
    # The two sum the micro-batch gradients in another order (all-reduce vs accumulation), and
    # Adam turns a rounding-level difference in a near-zero gradient into up to one learning
    # rate per step, so each tensor's update is compared as a whole (relative norm).
    for (k, pa), pb, p0 in zip(
        a.named_parameters(), b.parameters(), init.parameters(), strict=True
    ):
        da, db = (pa - p0).detach(), (pb - p0).detach()
        rel = float((da - db).norm() / da.norm().clamp_min(1e-12))
        assert rel < 2e-2, f"{k}: updates differ by {rel:.2e} (relative)"
        moved += bool(da.norm() > 0)
    assert moved > 0
    h1 = (tmp_path / "one" / "history.csv").read_text().splitlines()
    h2 = (tmp_path / "two" / "history.csv").read_text().splitlines()
    assert h1[0] == h2[0] and len(h1) == len(h2) == 2


@pytest.mark.slow
def test_divergence_stops_with_a_clear_error_and_keeps_no_bad_checkpoint(
    phantom, tmp_path, monkeypatch
):
    from lungmtl.losses import MultiTaskLoss

    orig = MultiTaskLoss.forward

    def nan_forward(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        return out._replace(total=out.total * float("nan"))

    monkeypatch.setattr(MultiTaskLoss, "forward", nan_forward)
    with pytest.raises(FloatingPointError, match="diverged at epoch 1"):
        fit(tiny_config([phantom], tmp_path / "c"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "last.pt").exists()
