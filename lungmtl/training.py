"""fit(): the training loop — multi-task loss, validation, checkpoints, resume."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import RunConfig, save_config, to_dict
from .data.augment import augment_batch
from .data.build import BuiltDataset, build_dataset
from .data.dataset import SliceTensors
from .device import autocast, prepare_input, prepare_model, resolve_device
from .errors import CheckpointError
from .losses import MultiTaskLoss
from .metrics import ClassificationAccumulator, SegmentationAccumulator
from .models import MultiTaskNet, checkpoint
from .predict_core import predict_tensors

#: Metrics that can select the best checkpoint (all: higher is better, except val_loss).
SELECT_METRICS = ("val_score", "val_dice_infected", "val_auc", "val_accuracy", "val_loss")


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_value: float
    history: list[dict]
    dataset: BuiltDataset


def build_from_config(cfg: RunConfig, progress: bool = True) -> BuiltDataset:
    d = cfg.data
    return build_dataset(
        d.sources,
        cfg.preprocess,
        cache_dir=d.cache_dir,
        split=d.split,
        split_seed=d.split_seed,
        balance_ratio=d.balance,
        study_labels=d.study_labels,
        max_slices=d.max_slices,
        skip_bad=d.skip_bad,
        progress=progress,
    )


def validation_metrics(model, data: SliceTensors, loss_fn, device, batch_size) -> dict:
    """Loss and the selection metrics on a held-out split."""
    pred = predict_tensors(model, data, device, batch_size, keep_logits=True)
    cls = ClassificationAccumulator()
    cls.update(data.label.numpy(), pred.p_infected)
    c = cls.compute()
    seg = SegmentationAccumulator()
    hm = data.has_mask.numpy()
    if hm.any():
        seg.update(pred.seg_prob[hm], data.mask.numpy()[hm].reshape(pred.seg_prob[hm].shape))
    s = seg.compute() if hm.any() else {}
    with torch.no_grad():
        mask = data.mask if data.mask.dtype == torch.long else data.mask.float()
        loss = loss_fn(pred.seg_logits, pred.cls_logits, mask, data.label, data.has_mask).total
    dice_inf = s.get("dice_infected_mean")
    auc = c.get("auc")
    parts = [v for v in (dice_inf, auc if auc is not None else c.get("accuracy")) if v is not None]
    return {
        "val_loss": float(loss),
        "val_accuracy": c.get("accuracy"),
        "val_auc": auc,
        "val_dice_infected": dice_inf,
        "val_dice": s.get("dice_mean"),
        # The default selection metric weighs both tasks equally: mean of Dice over infected
        # slices and AUC (accuracy where AUC is undefined).
        "val_score": float(np.mean(parts)) if parts else None,
    }


def _resumable(cfg: dict | None) -> dict | None:
    """The config without the keys that may change when a run is resumed or extended."""
    if cfg is None:
        return None
    out = {k: dict(v) for k, v in cfg.items()}
    for section, key in (
        ("train", "epochs"),
        ("train", "early_stopping"),
        ("train", "device"),
        ("data", "cache_dir"),
    ):
        out.get(section, {}).pop(key, None)
    return out


def _state(model, opt, sched, epoch, history, best, cfg) -> dict:
    return {
        "run_config": to_dict(cfg),
        "epoch": epoch,
        "history": history,
        "best": best,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
    }


def fit(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    dataset: BuiltDataset | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``cfg`` into ``run_dir`` (``config.yaml``, ``history.csv``, ``best.pt``, ``last.pt``).

    With ``resume`` it continues from ``run_dir/last.pt``; every epoch draws its shuffling,
    augmentation and dropout randomness from ``seed`` and the epoch number, so an interrupted
    and resumed run reaches the same weights as an uninterrupted one (on CPU).
    """
    run_dir = Path(run_dir)
    t = cfg.train
    if t.select_metric not in SELECT_METRICS:
        raise ValueError(f"unknown select_metric {t.select_metric!r}; valid: {SELECT_METRICS}")
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    ds = dataset if dataset is not None else build_from_config(cfg, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    ds.table.to_csv(run_dir / "split.csv", index=False)
    ds.summary().to_csv(run_dir / "data_summary.csv", index=False)

    multiclass = cfg.model.seg_classes > 1
    train = SliceTensors(ds.cache, ds.rows("train"), multiclass=multiclass, pin=True)
    val = SliceTensors(ds.cache, ds.rows("val"), multiclass=multiclass)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"empty split: {len(train)} train and {len(val)} validation slices")

    model = prepare_model(MultiTaskNet(cfg.model), device)
    opt = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.optim.lr_decay)
    loss_fn = MultiTaskLoss(**to_dict(cfg.loss))
    step_model = torch.compile(model) if t.compile else model

    history: list[dict] = []
    start = 0
    minimise = t.select_metric == "val_loss"
    best = {"epoch": -1, "value": math.inf if minimise else -math.inf}
    if resume and (run_dir / "last.pt").exists():
        ck = checkpoint.read(run_dir / "last.pt", map_location=device)
        if _resumable(ck.get("run_config")) != _resumable(to_dict(cfg)):
            raise CheckpointError(
                run_dir / "last.pt",
                "was trained with a different config (only train.epochs, train.early_stopping, "
                "train.device and data.cache_dir may change on resume)",
            )
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1

    bad_epochs = 0
    for epoch in range(start, t.epochs):
        torch.manual_seed(t.seed * 100_003 + epoch)  # dropout
        gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        model.train()
        sums = {"loss": 0.0, "seg": 0.0, "cls": 0.0}
        n_seen, t0 = 0, time.perf_counter()
        steps = math.ceil(len(train) * cfg.augment.expand / t.batch_size)
        if t.max_steps_per_epoch:
            steps = min(steps, t.max_steps_per_epoch)
        bar = tqdm(
            total=steps, disable=not progress, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False
        )
        batches = train.batches(
            t.batch_size, shuffle=True, generator=gen, repeat=cfg.augment.expand, device=device
        )
        for _, b in zip(range(steps), batches, strict=False):
            x, m = b.image, b.mask
            if cfg.augment.enabled:
                a = cfg.augment
                m_in = m[:, None].float() if multiclass else m
                x, m_in = augment_batch(
                    x, m_in, rot90=a.rot90, shift=a.shift, zoom=a.zoom, shear=a.shear, generator=gen
                )
                m = m_in[:, 0].long() if multiclass else m_in
            x = prepare_input(x, device)
            with autocast(device):
                out = step_model(x)
            losses = loss_fn(out.seg.float(), out.cls.float(), m, b.label, b.has_mask)
            opt.zero_grad(set_to_none=True)
            losses.total.backward()
            opt.step()
            n = len(b.label)
            n_seen += n
            for k, v in zip(("loss", "seg", "cls"), losses, strict=True):
                sums[k] += float(v.detach()) * n
            bar.update(1)
            bar.set_postfix(
                loss=f"{sums['loss'] / n_seen:.4f}",
                sl_s=f"{n_seen / (time.perf_counter() - t0):.1f}",
            )
        bar.close()
        train_time = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val_m = validation_metrics(model, val, loss_fn, device, t.batch_size)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": sums["loss"] / n_seen,
            "train_seg_loss": sums["seg"] / n_seen,
            "train_cls_loss": sums["cls"] / n_seen,
            **val_m,
            "train_slices_per_s": n_seen / train_time,
            "epoch_seconds": time.perf_counter() - t0,
        }
        history.append(row)
        value = val_m[t.select_metric]
        improved = value is not None and (
            value < best["value"] if minimise else value > best["value"]
        )
        if improved:
            best = {"epoch": epoch + 1, "value": float(value)}
            checkpoint.save(
                model, run_dir / "best.pt", run_config=to_dict(cfg), epoch=epoch, metrics=val_m
            )
            bad_epochs = 0
        else:
            bad_epochs += 1
        checkpoint.save(
            model, run_dir / "last.pt", **_state(model, opt, sched, epoch, history, best, cfg)
        )
        _write_history(run_dir / "history.csv", history)
        if progress:
            shown = ", ".join(
                f"{k}={v:.4f}"
                for k, v in row.items()
                if k.startswith(("train_loss", "val_")) and v is not None
            )
            tqdm.write(f"epoch {epoch + 1}: {shown}")
        if t.early_stopping and bad_epochs >= t.early_stopping:
            break
    if not (run_dir / "best.pt").exists():  # metric never defined: keep the last weights
        checkpoint.save(model, run_dir / "best.pt", run_config=to_dict(cfg), epoch=t.epochs - 1)
    return FitResult(run_dir, best["epoch"], best["value"], history, ds)


def _write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)
