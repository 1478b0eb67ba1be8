"""Networks from the ecosystem as multi-task baselines, behind lungmtl's model interface.

Each wraps a library's 2-D segmentation network so that it returns a :class:`MultiTaskOutput`
and trains, evaluates, checkpoints and predicts through the same code as lungmtl's own models:

* ``smp-unet``: segmentation_models_pytorch ``Unet`` with its auxiliary classification head
  (``aux_params``: global pooling -> dropout -> linear, on the deepest encoder map). The encoder
  is ``ModelConfig.encoder`` (default ``resnet34``), randomly initialised (no download at run
  time); the decoder channels (256, 128, 64, 32, 16) are scaled by ``width_mult``. Needs
  ``pip install lungmtl[smp]``, which pulls torchvision (see README: not beside torch 2.13 CPU).
* ``monai-unet``: MONAI ``BasicUNet`` (2-D; features (32, 32, 64, 128, 256, 32) scaled by
  ``width_mult``) with lungmtl's classification head on its bottleneck (``down_4``), read by a
  forward hook so MONAI's own forward is used unchanged. Needs ``pip install lungmtl[monai]``.

Neither takes lungmtl's CBAM (``attention`` must be ``None``).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import MODELS, ModelConfig, ModelEntry, MultiTaskOutput
from .heads import ClassificationHead


def _import(name: str):
    extra, module = MODELS[name].extra, MODELS[name].module
    try:
        return __import__(module)
    except Exception as e:  # ImportError, or torchvision's operator error beside a CPU torch
        raise ImportError(
            f"model {name!r} needs {module} ({type(e).__name__}: {e}); "
            f"install it with: pip install 'lungmtl[{extra}]'"
        ) from None


def _scaled(widths: tuple[int, ...], mult: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * mult)) for w in widths)


class ExternalNet(nn.Module):
    """Common shape of the wrappers: ``config``, ``divisor``, ``explain_layer``."""

    config: ModelConfig

    @property
    def explain_layer(self) -> nn.Module:
        """The deepest encoder map the classifier reads (Grad-CAM's default layer)."""
        raise NotImplementedError

    def _check(self, x: torch.Tensor) -> None:
        d = self.config.divisor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(f"input height and width must be multiples of {d}")


class SmpUnet(ExternalNet):
    """segmentation_models_pytorch ``Unet`` + ``aux_params`` classification head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        smp = _import("smp-unet")
        self.config = config
        self.net = smp.Unet(
            config.encoder or "resnet34",
            encoder_weights=None,
            in_channels=config.in_channels,
            classes=config.seg_classes,
            decoder_channels=_scaled((256, 128, 64, 32, 16), config.width_mult),
            aux_params={"classes": 2, "dropout": config.dropout},
        )

    @property
    def explain_layer(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor):
        self._check(x)
        seg, cls = self.net(x)
        return MultiTaskOutput(seg, cls)


class MonaiUNet(ExternalNet):
    """MONAI ``BasicUNet`` (2-D) + lungmtl's classification head on its bottleneck."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        _import("monai-unet")
        from monai.networks.nets import BasicUNet

        self.config = config
        feats = _scaled((32, 32, 64, 128, 256, 32), config.width_mult)
        self.net = BasicUNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.seg_classes,
            features=feats,
        )
        self.cls_head = ClassificationHead(feats[4], config.cls_hidden, config.dropout)
        self._bottleneck: list[torch.Tensor] = []
        # A bound method (not a lambda) so that a deep copy (e.g. the EMA copy of the weights)
        # keeps its own hook, writing into the copy's list.
        self.net.down_4.register_forward_hook(self._keep_bottleneck)

    def _keep_bottleneck(self, _module, _inputs, out: torch.Tensor) -> None:
        self._bottleneck.append(out)

    @property
    def explain_layer(self) -> nn.Module:
        return self.net.down_4

    def forward(self, x: torch.Tensor):
        self._check(x)
        self._bottleneck.clear()
        seg = self.net(x)
        deep = self._bottleneck.pop()
        self._bottleneck.clear()
        return MultiTaskOutput(seg, self.cls_head(deep))


MODELS.update(
    {
        # five stride-2 stages in smp's encoders
        "smp-unet": ModelEntry(
            SmpUnet,
            divisor=32,
            attention=False,
            options=("encoder",),
            extra="smp",
            module="segmentation_models_pytorch",
        ),
        "monai-unet": ModelEntry(
            MonaiUNet, divisor=16, attention=False, extra="monai", module="monai"
        ),
    }
)
