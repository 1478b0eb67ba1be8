"""The batched forward: batches cover the input, batch size does not change the result."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lungmtl.forward import forward_batches, slice_probabilities
from lungmtl.models import MultiTaskOutput


class MeanModel(nn.Module):
    """cls logit of "infected" = mean of the slice; seg logits = the pixels (one or 3 classes)."""

    def __init__(self, classes: int = 1) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        score = x.mean(dim=(1, 2, 3))
        seg = x if self.classes == 1 else torch.cat([-x, x, 0 * x], dim=1)
        return MultiTaskOutput(seg, torch.stack([torch.zeros_like(score), score], dim=1))


def _images(n: int = 7, size: int = 8) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(n, 1, size, size))).float()


def test_batches_cover_every_slice_once():
    x = _images(7)
    rows = [b.rows for b in forward_batches(MeanModel(), x, torch.device("cpu"), batch_size=3)]
    assert rows == [slice(0, 3), slice(3, 6), slice(6, 7)]


def test_batch_size_does_not_change_the_probabilities():
    x = _images(7)
    one = slice_probabilities(MeanModel(), x, torch.device("cpu"), batch_size=7)
    many = slice_probabilities(MeanModel(), x, torch.device("cpu"), batch_size=2)
    np.testing.assert_allclose(one.p_infected, many.p_infected, rtol=1e-6)
    np.testing.assert_allclose(one.seg_prob, many.seg_prob, rtol=1e-6)
    want = torch.sigmoid(x.mean(dim=(1, 2, 3))).numpy()  # softmax of (0, s) = sigmoid(s)
    np.testing.assert_allclose(one.p_infected, want, rtol=1e-5)
    np.testing.assert_allclose(one.seg_prob, torch.sigmoid(x[:, 0]).numpy(), rtol=1e-5)


def test_multiclass_maps_are_one_minus_background_and_empty_input_is_empty():
    x = _images(3)
    pred = slice_probabilities(MeanModel(classes=3), x, torch.device("cpu"))
    logits = torch.cat([-x, x, 0 * x], dim=1)
    want = 1 - torch.softmax(logits, dim=1)[:, 0]
    np.testing.assert_allclose(pred.seg_prob, want.numpy(), rtol=1e-5)
    empty = slice_probabilities(MeanModel(), x[:0], torch.device("cpu"))
    assert empty.p_infected.shape == (0,) and empty.seg_prob.shape == (0, 8, 8)
