"""The model side of prediction: a checkpoint loaded with its pre-processing, and the model stage
(eager PyTorch, or the exported model through ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..calibration import Calibration
from ..config import RunConfig, from_dict
from ..data.preprocess import PreprocessConfig
from ..device import resolve_device
from ..errors import InputError
from ..forward import slice_probabilities
from ..mask_rule import MaskRule
from ..models import MultiTaskOutput, checkpoint
from ..scan_rule import ScanRule


@dataclass
class Predictor:
    """A model with the pre-processing it was trained with."""

    model: torch.nn.Module
    preprocess: PreprocessConfig
    device: torch.device
    checkpoint: str = ""
    runner: torch.nn.Module | None = None  # what runs the slices, where not ``model`` (ONNX)
    rule: ScanRule | None = None  # the scan rule the checkpoint carries (chosen on validation)
    model_name: str = ""
    mask_rule: MaskRule = field(default_factory=lambda: MaskRule("none"))  # the checkpoint's
    calibration: Calibration = field(default_factory=Calibration)  # checkpoint's or a site's


def load_predictor(checkpoint_path: str | Path, device: str = "auto") -> Predictor:
    """Load a checkpoint with its pre-processing settings.

    Raises:
        InputError: the checkpoint has no run config (its pre-processing would be a guess).
    """
    restored = checkpoint.restore(checkpoint_path)
    ck = restored.meta
    if "run_config" not in ck:
        raise InputError(
            checkpoint_path, "checkpoint has no run config, so its pre-processing is unknown"
        )
    cfg: RunConfig = from_dict(RunConfig, ck["run_config"], "checkpoint run_config")
    dev = resolve_device(device)
    model = restored.model.to(dev)
    # channels_last is measurably faster for these convolutions on CPU too (benchmarks/scan.py).
    model = model.to(memory_format=torch.channels_last)
    rule = ScanRule.from_dict(ck["scan_rule"]) if ck.get("scan_rule") else None
    name = ck.get("model_name") or Path(str(checkpoint_path)).name
    return Predictor(
        model,
        cfg.preprocess,
        dev,
        str(checkpoint_path),
        rule=rule,
        model_name=name,
        mask_rule=MaskRule.of_checkpoint(ck),
        calibration=Calibration.of_checkpoint(ck),
    )


def use_site_calibration(predictor: Predictor, path: str | Path) -> Predictor:
    """Read P(infected), the slice threshold and the scan rule from a site file written by
    ``lungmtl calibrate`` for this very checkpoint (refused for another model's)."""
    from ..models.shipped import sha256

    cal = Calibration.load(path)
    cal.check_model(sha256(checkpoint.resolve(predictor.checkpoint)), predictor.model_name)
    predictor.calibration = cal
    return predictor


def run_model(
    predictor: Predictor, images: np.ndarray, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """The model's own P(infected) (N,) (before any calibration) and infection probability maps
    (N, S, S) after the checkpoint's mask rule, for pre-processed slices.

    Args:
        predictor: model and device.
        images: float32 (N, S, S) pre-processed slices.
        batch_size: slices per forward pass.
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    model = predictor.runner or predictor.model
    pred = slice_probabilities(model, x, predictor.device, batch_size)
    pred = predictor.mask_rule.apply(pred)
    return pred.p_infected, pred.seg_prob


def engine_name(predictor: Predictor) -> str:
    """``"onnx"`` where the slices run through ONNX Runtime, else ``"torch"``."""
    return "onnx" if isinstance(predictor.runner, OnnxRunner) else "torch"


class OnnxRunner(torch.nn.Module):
    """An exported ONNX model behind the model interface (CPU tensors in, MultiTaskOutput out)."""

    def __init__(self, path: str | Path):
        from ..export import onnx_session

        super().__init__()
        self.session = onnx_session(path)

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        seg, cls = self.session.run(["seg", "cls"], {"image": np.ascontiguousarray(x.numpy())})
        return MultiTaskOutput(torch.from_numpy(seg), torch.from_numpy(cls))


def attach_onnx(predictor: Predictor, checkpoint_path: str | Path, work_dir: Path) -> Predictor:
    """Export the checkpoint to ONNX in ``work_dir`` and run slices through ONNX Runtime."""
    from ..export import export

    if predictor.device.type != "cpu":
        raise InputError("--engine onnx", f"runs on the CPU; the device here is {predictor.device}")
    try:
        path = export(checkpoint_path, work_dir / "model.onnx")
        predictor.runner = OnnxRunner(path)
    except ImportError as e:
        raise InputError(
            "--engine onnx", f"needs onnx and onnxruntime (pip install 'lungmtl[export]'): {e}"
        ) from None
    return predictor
