"""Batches for training and evaluation, drawn from a cache held in (pinned) memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from .cache import UNKNOWN, SliceCache


class Batch(NamedTuple):
    """One batch. ``image`` (N,1,S,S) float32; ``mask`` (N,1,S,S) float32 0/1 (or (N,S,S) long
    class indices when multiclass); ``has_mask`` (N,) bool; ``label`` (N,) long, 1 = infected;
    ``row`` (N,) long, the cache rows."""

    image: torch.Tensor
    mask: torch.Tensor
    has_mask: torch.Tensor
    label: torch.Tensor
    row: torch.Tensor


class SliceTensors:
    """The rows of a cache as tensors, batched by index: no per-sample Python work per step.

    Args:
        cache: the slice cache.
        rows: which cache rows (e.g. one split).
        multiclass: use the 0/1/2 masks (rows without one count as having no mask).
        pin: pin host memory so copies to the GPU are asynchronous.
    """

    def __init__(
        self, cache: SliceCache, rows: np.ndarray, *, multiclass: bool = False, pin: bool = False
    ):
        rows = np.array(rows, dtype=np.int64)  # a writable copy
        self.rows = torch.from_numpy(rows)
        self.image = torch.from_numpy(np.ascontiguousarray(cache.images[rows]))[:, None]
        table = cache.table.iloc[rows]
        self.label = torch.tensor((table["label"] == "infected").to_numpy(), dtype=torch.long)
        if multiclass:
            multi = np.ascontiguousarray(cache.multiclass[rows])
            self.has_mask = torch.from_numpy((multi != UNKNOWN).all(axis=(1, 2)))
            self.mask = torch.from_numpy(np.where(multi == UNKNOWN, 0, multi)).long()
        else:
            self.has_mask = torch.tensor(table["has_mask"].to_numpy(dtype=bool))
            self.mask = torch.from_numpy(np.ascontiguousarray(cache.masks[rows]))[:, None]
        if pin and torch.cuda.is_available():
            self.image, self.mask = self.image.pin_memory(), self.mask.pin_memory()

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> Batch:
        nb = torch.device(device).type == "cuda"
        mask = self.mask[idx].to(device, non_blocking=nb)
        return Batch(
            image=self.image[idx].to(device, non_blocking=nb).float(),
            mask=mask if mask.dtype == torch.long else mask.float(),
            has_mask=self.has_mask[idx].to(device),
            label=self.label[idx].to(device),
            row=self.rows[idx],
        )

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        repeat: int = 1,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Yield batches over all rows (``repeat`` times, reshuffled each time when shuffling)."""
        for _ in range(repeat):
            order = (
                torch.randperm(len(self), generator=generator)
                if shuffle
                else torch.arange(len(self))
            )
            stop = len(order) - (len(order) % batch_size if drop_last else 0)
            for i in range(0, stop, batch_size):
                yield self.batch(order[i : i + batch_size], device)
