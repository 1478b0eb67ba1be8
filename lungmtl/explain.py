"""Grad-CAM of the classification decision (Selvaraju et al., ICCV 2017), hook-based.

pytorch-grad-cam needs torchvision, which lungmtl does not depend on, and the method is a few
lines: record the chosen layer's output with a forward hook, differentiate the class score with
respect to it, weight each channel by its spatially averaged gradient, sum, ReLU, upsample.

The score differentiated is the infected-vs-healthy log-odds, ``cls[:, 1] - cls[:, 0]`` (the
decision itself; with two softmax classes, the raw logit of one class alone also moves with
evidence for the other). ``target="healthy"`` flips the sign.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def default_layer(model: nn.Module) -> nn.Module:
    """The deepest encoder stage as the classification head sees it (after its attention module).

    Args:
        model: a :class:`lungmtl.models.MultiTaskNet` (anything with ``encoder.attn`` /
            ``encoder.stages``).

    Returns:
        The module whose output is the stride-16 feature map fed to the classification head.
    """
    members = getattr(model, "members", None)  # an Ensemble: its first member's map
    if isinstance(members, nn.ModuleList):
        return default_layer(members[0])
    layer = getattr(model, "explain_layer", None)  # the external baselines name theirs
    if isinstance(layer, nn.Module):
        return layer
    enc = getattr(model, "encoder", None)
    if enc is None:
        raise ValueError("model has no .encoder: pass the layer to explain explicitly")
    attn = getattr(enc, "attn", None)
    return attn[-1] if attn is not None else enc.stages[-1]


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """A module, a dotted name such as ``"encoder.stages.2"``, or None (the default layer)."""
    if layer is None:
        return default_layer(model)
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n.count(".") <= 2 and n]
        raise ValueError(f"no layer {layer!r} in the model; e.g. {names[:12]}") from None


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    layer: nn.Module | str | None = None,
    target: str = "infected",
    batch_size: int = 8,
) -> np.ndarray:
    """Grad-CAM maps of the classification decision for a batch of pre-processed slices.

    Args:
        model: returns an object with a ``.cls`` (N, 2) logits attribute (or a tuple whose second
            element is the logits). Put in eval mode here (no dropout).
        images: (N, C, H, W) model input (pre-processed, H and W model-compatible), any device;
            the model's device is used.
        layer: the layer to explain (module or dotted name); default :func:`default_layer`.
        target: ``"infected"`` (evidence for infection) or ``"healthy"``.
        batch_size: slices per backward pass.

    Returns:
        float32 (N, H, W) maps in [0, 1], each divided by its own maximum; all zero where no
        positive evidence is found.

    Shape:
        The map is computed at the layer's resolution (stride 16 by default: 14x14 for a 224
        input) and upsampled bilinearly, so it is coarse by construction.
    """
    if target not in ("infected", "healthy"):
        raise ValueError(f"target must be 'infected' or 'healthy', not {target!r}")
    module = resolve_layer(model, layer)
    model.eval()
    device = next(model.parameters()).device
    acts: list[torch.Tensor] = []

    def keep(_m, _inp, out):
        # An encoder that returns its feature pyramid (smp's): the deepest map, the one the
        # classification head reads.
        acts.append(out[-1] if isinstance(out, list | tuple) else out)

    handle = module.register_forward_hook(keep)
    maps = []
    try:
        for i in range(0, len(images), batch_size):
            acts.clear()
            x = images[i : i + batch_size].to(device).float()
            with torch.enable_grad():
                # The input joins the graph so activations are differentiable even where the
                # weights are frozen (requires_grad=False after loading for inference).
                x.requires_grad_(True)
                out = model(x)
                logits = out.cls if hasattr(out, "cls") else out[1]
                score = logits[:, 1] - logits[:, 0]
                if target == "healthy":
                    score = -score
                if not acts:
                    raise ValueError("the chosen layer did not run in the forward pass")
                act = acts[-1]
                (grad,) = torch.autograd.grad(score.sum(), act)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * act).sum(dim=1, keepdim=True)).detach()
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
            peak = cam.amax(dim=(2, 3), keepdim=True)
            cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))
            maps.append(cam[:, 0].float().cpu())
    finally:
        handle.remove()
    if not maps:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    return torch.cat(maps).numpy()
