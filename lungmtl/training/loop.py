"""fit(): train a run folder — epochs, validation, best/last checkpoints, resume, DDP."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ..config import RunConfig, comparable, save_config, to_dict
from ..data.build import BuiltDataset, build_from_config
from ..data.dataset import SliceTensors
from ..device import prepare_model, resolve_device
from ..errors import CheckpointError, InputError
from ..files import atomic_path
from ..losses import MultiTaskLoss, check_class_indices
from ..models import build_model, checkpoint
from .ddp import Distributed
from .epoch import ema_update, train_epoch
from .validate import SELECT_METRICS, validation_metrics


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_value: float
    history: list[dict]
    dataset: BuiltDataset


#: Keys that may change when a run is resumed or extended.
RESUMABLE_CHANGES = ("train.epochs", "train.early_stopping", "train.device", "data.cache_dir")


def _state(opt, sched, ema, epoch, history, best, cfg) -> dict:
    """What last.pt holds beside the weights, to resume (the EMA weights too, when kept)."""
    state = {
        "run_config": to_dict(cfg),
        "epoch": epoch,
        "history": history,
        "best": best,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
    }
    if ema is not None:
        state["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    return state


def fit(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    dataset: BuiltDataset | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> FitResult:
    """Train ``cfg`` into ``run_dir`` (``config.yaml``, ``history.csv``, ``best.pt``, ``last.pt``).

    A ``run_dir`` that already holds a trained run (``last.pt``) is refused unless ``resume``
    (continue it) or ``overwrite`` (start again, replacing it) is given: a finished run is never
    replaced by mistake.

    With ``resume`` it continues from ``run_dir/last.pt``; every epoch draws its shuffling,
    augmentation and dropout randomness from ``seed`` and the epoch number, so an interrupted
    and resumed run reaches the same weights as an uninterrupted one (on CPU).

    Launched by ``torchrun --nproc_per_node N`` (or ``lungmtl train --devices N``), it trains
    with DistributedDataParallel: one process per GPU (or gloo processes on CPU), each taking
    its share of every global batch; only rank 0 validates, logs and writes checkpoints.
    """
    run_dir = Path(run_dir)
    t = cfg.train
    if t.select_metric not in SELECT_METRICS:
        raise InputError(
            "train.select_metric", f"unknown {t.select_metric!r}; valid: {SELECT_METRICS}"
        )
    if t.grad_accum < 1:
        raise InputError("train.grad_accum", f"must be >= 1, got {t.grad_accum}")
    if not 0.0 < t.label_only_fraction <= 1.0:
        raise InputError(
            "train.label_only_fraction", f"must lie in (0, 1], got {t.label_only_fraction}"
        )
    if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
        raise InputError("train.ema_decay", f"must lie in (0, 1) or be null, got {t.ema_decay}")
    if not resume and not overwrite and (run_dir / "last.pt").exists():
        raise InputError(
            run_dir,
            "already holds a trained run (last.pt): continue it with --resume, replace it "
            "with --overwrite, or train into another --out",
        )
    ddp = Distributed()
    device = ddp.setup(resolve_device(t.device))
    try:
        return _fit(cfg, run_dir, resume, dataset, progress and ddp.main, ddp, device)
    finally:
        ddp.close()


def _fit(cfg, run_dir, resume, dataset, progress, ddp, device) -> FitResult:
    t = cfg.train
    torch.manual_seed(t.seed)
    ck = None
    if resume and (run_dir / "last.pt").exists():
        # Checked before anything is built or written: a refused resume leaves the run as it was.
        ck = checkpoint.read(run_dir / "last.pt", map_location=device)
        if comparable(ck.get("run_config"), RESUMABLE_CHANGES) != comparable(
            to_dict(cfg), RESUMABLE_CHANGES
        ):
            raise CheckpointError(
                run_dir / "last.pt",
                "was trained with a different config (only train.epochs, train.early_stopping, "
                "train.device and data.cache_dir may change on resume)",
            )
    if dataset is None:
        if not ddp.main:  # rank 0 builds the cache; the others then find it
            ddp.barrier()
        dataset = build_from_config(cfg, progress)
        if ddp.main:
            ddp.barrier()
    ds = dataset
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        ds.table.to_csv(run_dir / "split.csv", index=False)
        ds.summary().to_csv(run_dir / "data_summary.csv", index=False)

    multiclass = cfg.model.seg_classes > 1
    train = SliceTensors(ds.cache, ds.rows("train"), multiclass=multiclass, pin=True)
    val = SliceTensors(ds.cache, ds.rows("val"), multiclass=multiclass)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"empty split: {len(train)} train and {len(val)} validation slices")
    if multiclass:  # once, here: the loss does not check masks on a GPU (no sync per step)
        for name, split in (("train", train), ("val", val)):
            where = f"{name} masks (model.seg_classes = {cfg.model.seg_classes})"
            check_class_indices(split.mask, cfg.model.seg_classes, where)

    model = prepare_model(build_model(cfg.model), device)
    opt = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.optim.lr_decay)
    loss_fn = MultiTaskLoss(**to_dict(cfg.loss))
    ema = None
    if t.ema_decay is not None:
        ema = AveragedModel(model, multi_avg_fn=ema_update(t.ema_decay), use_buffers=True)
    # The weights that are validated and kept as best.pt: the moving average when there is one.
    kept = ema.module if ema is not None else model

    history: list[dict] = []
    start = 0
    minimise = t.select_metric == "val_loss"
    best = {"epoch": -1, "value": math.inf if minimise else -math.inf}
    if ck is not None:
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1
    # Epochs since the best one, from the history, so a resumed run keeps its early stopping
    # (and a run that had stopped early stays stopped, unless early_stopping was raised).
    bad_epochs = start - best["epoch"] if best["epoch"] > 0 else start
    if t.early_stopping and bad_epochs >= t.early_stopping and start < t.epochs:
        if progress:
            tqdm.write(f"{run_dir}: stopped early at epoch {start} before; nothing to resume")
        start = t.epochs

    step_model: torch.nn.Module = model
    if ddp.world > 1:
        # A task with weight 0 leaves its head without gradients; DDP must be told.
        unused = cfg.loss.seg_weight == 0 or cfg.loss.cls_weight == 0
        step_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    if t.compile:
        step_model = torch.compile(step_model)

    writer = _tensorboard(run_dir) if ddp.main else None
    for epoch in range(start, t.epochs):
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        row.update(
            train_epoch(
                cfg, model, step_model, opt, loss_fn, train, device, epoch, ddp, progress, ema
            )
        )
        sched.step()
        if not math.isfinite(row["train_loss"]):
            # Weights are already spoilt: stop before they overwrite last.pt (the last good epoch).
            hint = " (train.compile is on: try without it)" if t.compile else ""
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1}: non-finite loss{hint}; "
                f"the last good epoch is in {run_dir / 'last.pt'}"
            )
        stop = False
        if ddp.main:
            val_m = validation_metrics(kept, val, loss_fn, device, t.batch_size)
            row.update(val_m, epoch_seconds=time.perf_counter() - t0)
            history.append(row)
            value = val_m[t.select_metric]
            improved = value is not None and (
                value < best["value"] if minimise else value > best["value"]
            )
            if improved:
                best = {"epoch": epoch + 1, "value": float(value)}
                checkpoint.save(
                    kept, run_dir / "best.pt", run_config=to_dict(cfg), epoch=epoch, metrics=val_m
                )
                bad_epochs = 0
            else:
                bad_epochs += 1
            checkpoint.save(
                model, run_dir / "last.pt", **_state(opt, sched, ema, epoch, history, best, cfg)
            )
            _write_history(run_dir / "history.csv", history)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, float | int):
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            if progress:
                shown = ", ".join(
                    f"{k}={v:.4f}"
                    for k, v in row.items()
                    if k.startswith(("train_loss", "val_")) and v is not None
                )
                tqdm.write(f"epoch {epoch + 1}: {shown}")
            stop = bool(t.early_stopping and bad_epochs >= t.early_stopping)
        if ddp.broadcast(stop):
            break
    if ddp.main and not (run_dir / "best.pt").exists():  # metric never defined: keep the last
        checkpoint.save(kept, run_dir / "best.pt", run_config=to_dict(cfg), epoch=t.epochs - 1)
    ddp.barrier()
    return FitResult(run_dir, best["epoch"], best["value"], history, ds)


def _tensorboard(run_dir: Path):
    """A TensorBoard writer into ``run_dir/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: history.csv always has the same numbers
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(history)
