"""fit(): the training loop — multi-task loss, validation, checkpoints, resume."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from .config import RunConfig, comparable, save_config, to_dict
from .data.augment import (
    apply_affine,
    random_affine_matrices,
    random_flip_matrices,
    random_intensity,
    with_flips,
)
from .data.build import BuiltDataset, build_from_config
from .data.dataset import SliceTensors
from .device import autocast, prepare_input, prepare_model, resolve_device
from .errors import CheckpointError, InputError
from .files import atomic_path
from .losses import MultiTaskLoss, check_class_indices
from .metrics import ClassificationAccumulator, SegmentationAccumulator
from .models import build_model, checkpoint
from .predict_core import forward_batches

#: Metrics that can select the best checkpoint (all: higher is better, except val_loss).
SELECT_METRICS = ("val_score", "val_dice_infected", "val_auc", "val_accuracy", "val_loss")


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_value: float
    history: list[dict]
    dataset: BuiltDataset


def validation_metrics(model, data: SliceTensors, loss_fn, device, batch_size) -> dict:
    """Loss and the selection metrics on a held-out split, ``batch_size`` slices at a time: no
    logits or probability maps of the whole split are kept."""
    cls, seg = ClassificationAccumulator(), SegmentationAccumulator()
    # The loss of the whole split from its batches: the segmentation term is a mean over the
    # slices with a mask, the classification term a mean over all slices.
    seg_sum = cls_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_masked = int(data.has_mask.sum())
    for out in forward_batches(model, data.image, device, batch_size):
        label, hm = data.label[out.rows], data.has_mask[out.rows]
        cls.update(label.numpy(), out.p_infected.numpy())
        if hm.any():
            # Multiclass masks (0 background, 1 ground-glass, 2 consolidation) are scored as the
            # infection they outline, like the model's seg_prob (1 - p(background)).
            truth = data.mask[out.rows][hm].reshape(out.seg_prob[hm].shape) > 0
            seg.update(out.seg_prob[hm].numpy(), truth.numpy())
        mask = data.mask[out.rows].to(device)
        with torch.no_grad():
            part = loss_fn(
                out.seg,
                out.cls,
                mask if mask.dtype == torch.long else mask.float(),
                label.to(device),
                hm.to(device),
            )
        seg_sum = seg_sum + part.seg.double() * int(hm.sum())
        cls_sum = cls_sum + part.cls.double() * len(label)
    c = cls.compute()
    s = seg.compute() if n_masked else {}
    loss = loss_fn.combine(seg_sum / max(n_masked, 1), cls_sum / len(data))
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


#: Keys that may change when a run is resumed or extended.
RESUMABLE_CHANGES = ("train.epochs", "train.early_stopping", "train.device", "data.cache_dir")


def ema_update(decay: float):
    """The ``multi_avg_fn`` of :class:`AveragedModel` for an EMA whose decay warms up.

    Update ``t`` (from 1) uses ``min(decay, (1 + t) / (10 + t))``: a fixed decay would keep
    ``decay ** t`` of the initial weights and batch-norm statistics (0.99 ** 200 = 13%), and an
    initial running variance of 1 against a learnt 0.004 ruins the averaged model for hundreds
    of steps. With the warm-up the initial state is gone after a few dozen steps.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (batch-norm's num_batches_tracked): follow the model
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


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


class Distributed:
    """This process's place in a torchrun/DDP job (world 1 when not launched by torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo on CPU); one GPU per process."""
        if self.world == 1:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True
        return device

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()


def epoch_order(
    has_mask: torch.Tensor, expand: int, gen: torch.Generator, label_only_fraction: float = 1.0
) -> torch.Tensor:
    """Sample order of one epoch: ``expand`` fresh permutations of the training rows.

    With ``label_only_fraction`` < 1 each permutation holds every slice with a mask but only a
    fresh random share of the label-only ones (no mask: they train the classifier alone, which
    learns much faster than the decoder), so an epoch spends its compute where it is needed.
    """
    n = len(has_mask)
    if label_only_fraction >= 1.0:
        return torch.cat([torch.randperm(n, generator=gen) for _ in range(expand)])
    masked = torch.nonzero(has_mask).flatten()
    label_only = torch.nonzero(~has_mask).flatten()
    k = math.ceil(label_only_fraction * len(label_only))
    parts = []
    for _ in range(expand):
        pick = label_only[torch.randperm(len(label_only), generator=gen)[:k]]
        rows = torch.cat([masked, pick])
        parts.append(rows[torch.randperm(len(rows), generator=gen)])
    return torch.cat(parts)


def train_epoch(
    cfg: RunConfig,
    model: torch.nn.Module,
    step_model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: MultiTaskLoss,
    train: SliceTensors,
    device: torch.device,
    epoch: int,
    ddp: Distributed,
    progress: bool,
    ema: AveragedModel | None = None,
) -> dict:
    """One epoch over global batches of ``batch_size x world x grad_accum`` slices.

    Every process draws the same order and augmentation (seeded by seed and epoch) and takes its
    own micro-batches of each global batch, so N processes compute what one process computes
    with ``grad_accum = N``: the weights after any step are the same. ``ema``, when given, is
    updated after every optimiser step.
    """
    t, a = cfg.train, cfg.augment
    multiclass = cfg.model.seg_classes > 1
    torch.manual_seed(t.seed * 100_003 + epoch)  # dropout
    gen = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
    order = epoch_order(train.has_mask, a.expand, gen, t.label_only_fraction)
    micro = ddp.world * t.grad_accum
    global_batch = t.batch_size * micro
    steps = (math.ceil if micro == 1 else math.floor)(len(order) / global_batch)
    if t.max_steps_per_epoch:
        steps = min(steps, t.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(
            f"{len(order)} training slices cannot fill one global batch of "
            f"{global_batch}; lower train.batch_size"
        )
    model.train()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, seg, cls, n
    t0 = time.perf_counter()
    bar = tqdm(
        total=steps,
        disable=not (progress and ddp.main),
        leave=False,
        desc=f"epoch {epoch + 1}/{t.epochs}",
    )
    for s in range(steps):
        idx = order[s * global_batch : (s + 1) * global_batch]
        mats = None
        if a.enabled:
            mats = random_affine_matrices(
                len(idx), rot90=a.rot90, shift=a.shift, zoom=a.zoom, shear=a.shear, generator=gen
            )
            if a.intensity > 0:  # one seed per step: every micro-batch's draw, on any rank
                iseed = int(torch.randint(2**62, (1,), generator=gen))
            if a.flip_lr > 0 or a.flip_ud > 0:
                flips = random_flip_matrices(len(idx), lr=a.flip_lr, ud=a.flip_ud, generator=gen)
                mats = with_flips(mats, flips)
        opt.zero_grad(set_to_none=True)
        for k in range(t.grad_accum):
            c = ddp.rank * t.grad_accum + k
            part = slice(c * t.batch_size, (c + 1) * t.batch_size)
            b = train.batch(idx[part], device)
            x, m = b.image, b.mask
            if mats is not None:
                m_in = m[:, None].float() if multiclass else m
                x, m_in = apply_affine(x, m_in, mats[part].to(device))
                m = m_in[:, 0].long() if multiclass else m_in
                if a.intensity > 0:
                    g = torch.Generator().manual_seed(iseed + c)
                    x = random_intensity(x, p=a.intensity, generator=g)
            x = prepare_input(x, device)
            sync = k == t.grad_accum - 1 or not hasattr(step_model, "no_sync")
            with contextlib.nullcontext() if sync else step_model.no_sync(), autocast(device):
                out = step_model(x)
            losses = loss_fn(out.seg.float(), out.cls.float(), m, b.label, b.has_mask)
            (losses.total / t.grad_accum).backward()
            n = len(b.label)
            sums += torch.stack(
                [v.detach().double() * n for v in losses]
                + [torch.tensor(n, dtype=torch.float64, device=device)]
            )
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        bar.update(1)
        if progress and ddp.main and (s % 10 == 0 or s == steps - 1):
            done = sums.tolist()
            bar.set_postfix(
                loss=f"{done[0] / done[3]:.4f}",
                sl_s=f"{done[3] * ddp.world / (time.perf_counter() - t0):.1f}",
            )
    bar.close()
    loss, seg, cls, n = ddp.sum(sums.tolist(), device)
    secs = time.perf_counter() - t0
    return {
        "train_loss": loss / n,
        "train_seg_loss": seg / n,
        "train_cls_loss": cls / n,
        "train_slices_per_s": n / secs,
        "train_seconds": secs,
    }


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
