"""CRF post-processing by loopy belief propagation (lungmtl.crf)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungmtl.crf import crf_refine, crf_refine_torch


def _noisy_square(rng, n=48):
    truth = np.zeros((n, n), bool)
    truth[12:36, 12:36] = True
    prob = np.where(truth, 0.75, 0.25) + rng.normal(0, 0.2, (n, n))
    return truth, np.clip(prob, 0.01, 0.99).astype(np.float32)


def test_crf_removes_speckle_and_keeps_the_shape():
    rng = np.random.default_rng(0)
    truth, prob = _noisy_square(rng)
    plain = (prob >= 0.5) != truth
    refined = crf_refine(prob)
    assert refined.shape == prob.shape and refined.dtype == np.float32
    errors = (refined >= 0.5) != truth
    assert errors.sum() < 0.3 * plain.sum(), (errors.sum(), plain.sum())


def test_crf_without_pairwise_term_is_the_identity_and_checks_arguments():
    rng = np.random.default_rng(1)
    _, prob = _noisy_square(rng, 16)
    out = crf_refine(prob[None], beta=0.0)
    np.testing.assert_allclose(out[0], prob, atol=1e-5)
    t = torch.from_numpy(prob)
    assert isinstance(crf_refine(t), torch.Tensor)
    with pytest.raises(ValueError, match="damping"):
        crf_refine_torch(t, damping=1.0)
    with pytest.raises(ValueError, match="expected"):
        crf_refine_torch(t[None, None])


def test_stronger_damping_moves_less_per_sweep():
    rng = np.random.default_rng(2)
    _, prob = _noisy_square(rng, 24)
    light = crf_refine(prob, damping=0.0, n_iter=1)
    heavy = crf_refine(prob, damping=0.8, n_iter=1)
    assert np.abs(heavy - prob).mean() < np.abs(light - prob).mean()


def test_message_passing_runs_until_the_messages_settle():
    """On an uncertain map 20 sweeps are far from the fixed point; the default (to tolerance)
    lands near a 3000-sweep reference."""
    prob = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = crf_refine_torch(prob, n_iter=3000, tol=0) >= 0.5
    short = crf_refine_torch(prob, n_iter=20, tol=0) >= 0.5
    settled = crf_refine_torch(prob) >= 0.5
    assert (short != ref).float().mean() > 0.03
    assert (settled != ref).float().mean() < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_crf_runs_on_the_gpu_and_matches_the_cpu():
    rng = np.random.default_rng(3)
    _, prob = _noisy_square(rng)
    cpu = crf_refine(prob)
    gpu = crf_refine(torch.from_numpy(prob).cuda())
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-4)


def test_crf_raises_the_dice_of_noisy_maps():
    from lungmtl.metrics import dice

    rng = np.random.default_rng(4)
    pairs = [_noisy_square(rng) for _ in range(4)]
    masks = np.stack([t for t, _ in pairs])
    probs = np.stack([p for _, p in pairs])
    refined = crf_refine(probs)
    plain = np.mean([dice(p >= 0.5, m) for p, m in zip(probs, masks, strict=True)])
    crf = np.mean([dice(p >= 0.5, m) for p, m in zip(refined, masks, strict=True)])
    assert crf > plain
