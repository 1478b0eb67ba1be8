"""Export a checkpoint to ONNX or TorchScript, and check the export against PyTorch.

The exported graph takes the *pre-processed* slices, float32 (N, 1, S, S) with S the checkpoint's
``preprocess.size`` (pre-processing itself is numpy/scipy and stays outside the graph), and returns
two outputs: ``seg`` (N, seg_classes, S, S) logits and ``cls`` (N, 2) logits (index 1 = infected),
the same as :class:`lungmtl.models.MultiTaskOutput`. The batch axis is dynamic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .models import checkpoint

FORMATS = ("onnx", "torchscript")
OPSET = 17


class _TupleOutput(nn.Module):
    """Plain (seg, cls) tuple out: exporters and other runtimes do not know NamedTuples."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out.seg, out.cls


def input_size(ckpt: dict) -> int:
    """The model's input side: the run's ``preprocess.size`` (224 without a run config)."""
    run = ckpt.get("run_config") or {}
    return int((run.get("preprocess") or {}).get("size", 224))


def export(checkpoint_path: str | Path, out: str | Path, fmt: str = "onnx") -> Path:
    """Export a checkpoint (file or run directory).

    Args:
        checkpoint_path: ``.pt`` file or run directory.
        out: file to write (``.onnx`` / ``.pt`` by convention).
        fmt: ``"onnx"`` or ``"torchscript"``.

    Returns:
        ``out`` as a Path.
    """
    if fmt not in FORMATS:
        raise InputError(fmt, f"unknown export format; valid: {', '.join(FORMATS)}")
    restored = checkpoint.restore(checkpoint_path)
    model = _TupleOutput(restored.model).eval()
    size = input_size(restored.meta)
    example = torch.zeros(2, model.model.config.in_channels, size, size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Tracer/exporter deprecation chatter is not actionable for users of the exported file.
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(out))
        else:
            torch.onnx.export(
                model,
                (example,),
                str(out),
                input_names=["image"],
                output_names=["seg", "cls"],
                dynamic_axes={"image": {0: "batch"}, "seg": {0: "batch"}, "cls": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript-based exporter: no onnxscript dependency
            )
    return out


def onnx_session(path: str | Path):
    """ONNX Runtime CPU session on an exported file (input ``image``; outputs ``seg``, ``cls``)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own Fail/InvalidProtobuf/NoSuchFile types
        raise InputError(path, f"not a loadable ONNX model ({type(e).__name__}: {e})") from None


def run_exported(path: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported model (format from the suffix: ``.onnx`` via onnxruntime, else TorchScript).

    Args:
        path: the exported file.
        images: float32 (N, 1, S, S).

    Returns:
        (seg logits, cls logits) as numpy arrays.
    """
    path = Path(path)
    x = np.ascontiguousarray(images, dtype=np.float32)
    if path.suffix.lower() == ".onnx":
        seg, cls = onnx_session(path).run(["seg", "cls"], {"image": x})
        return seg, cls
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # a truncated or foreign file
            raise InputError(path, f"not a loadable TorchScript model ({e})") from None
    with torch.no_grad():
        seg, cls = module(torch.from_numpy(x))
    return seg.numpy(), cls.numpy()


def verify(checkpoint_path: str | Path, exported: str | Path, n: int = 3, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch and the exported model on random slices.

    Args:
        checkpoint_path: the checkpoint that was exported.
        exported: the exported file.
        n: number of random slices (a batch size other than the export example's).
        seed: random seed.

    Returns:
        max |difference| over both outputs (logits).
    """
    restored = checkpoint.restore(checkpoint_path)
    model = restored.model
    size = input_size(restored.meta)
    x = np.random.default_rng(seed).random((n, 1, size, size), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    seg, cls = run_exported(exported, x)
    return float(max(np.abs(seg - ref.seg.numpy()).max(), np.abs(cls - ref.cls.numpy()).max()))
