"""One training epoch: sample order, augmentation, multi-task steps, the EMA update."""

from __future__ import annotations

import contextlib
import math
import time

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ..config import RunConfig
from ..data.augment import (
    apply_affine,
    random_affine_matrices,
    random_appearance,
    random_flip_matrices,
    random_intensity,
    with_flips,
)
from ..data.dataset import SliceTensors
from ..device import autocast, prepare_input
from ..losses import MultiTaskLoss
from .ddp import Distributed


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
            if a.intensity > 0 or a.lowres or a.jpeg or a.clahe:  # one seed per step, any rank
                iseed = int(torch.randint(2**62, (1,), generator=gen))
            if a.flip_lr > 0 or a.flip_ud > 0:
                flips = random_flip_matrices(len(idx), lr=a.flip_lr, ud=a.flip_ud, generator=gen)
                mats = with_flips(mats, flips)
        opt.zero_grad(set_to_none=True)
        for k in range(t.grad_accum):
            c = ddp.rank * t.grad_accum + k
            part = slice(c * t.batch_size, (c + 1) * t.batch_size)
            b = train.batch(idx[part], device)
            if t.healthy_empty_masks:  # a healthy slice's infection mask is known: empty
                b = b._replace(has_mask=b.has_mask | (b.label == 0))
            x, m = b.image, b.mask
            if mats is not None:
                m_in = m[:, None].float() if multiclass else m
                x, m_in = apply_affine(x, m_in, mats[part].to(device))
                m = m_in[:, 0].long() if multiclass else m_in
                if a.intensity > 0 or a.lowres or a.jpeg or a.clahe:
                    g = torch.Generator().manual_seed(iseed + c)
                    if a.lowres or a.jpeg or a.clahe:  # off: the draws of older recipes stay
                        x = random_appearance(
                            x, lowres=a.lowres, jpeg=a.jpeg, clahe=a.clahe, generator=g
                        )
                    if a.intensity > 0:
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
