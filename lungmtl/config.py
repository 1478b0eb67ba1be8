"""The configuration of a run: a validated dataclass tree, YAML in and out, ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.preprocess import PreprocessConfig
from .data.sources import absolute_source
from .errors import InputError
from .models import ModelConfig


def _need(ok: bool, problem: str) -> None:
    """Refuse a config value at read time (``from_dict`` names the section)."""
    if not ok:
        raise ValueError(problem)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _count(name: str, value: int | None, least: int, none_ok: bool = False) -> None:
    _need(
        (none_ok and value is None) or (isinstance(value, int) and value >= least),
        f"{name} must be an integer >= {least}{' or null' if none_ok else ''}, got {value!r}",
    )


def _share(name: str, value: float, low_open: bool = False) -> None:
    ok = _finite(value) and (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0)
    _need(ok, f"{name} must lie in {'(0' if low_open else '[0'}, 1], got {value!r}")


@dataclass
class DataConfig:
    """Where the slices come from and how they are split.

    Args:
        sources: folders in the manifest layout (or a folder of such folders) or an official
            layout (see docs/data-format.md). Relative paths resolve against the working directory.
        cache_dir: where pre-processed arrays are cached (keyed by the pre-processing config).
        split: train / validation / test fractions, by patient.
        split_seed: seed of the patient split.
        balance: ``None`` keeps every slice; a number r keeps at most r healthy slices per infected
            slice in each split (1.0 = the paper's equal pairing, Table 2), sampling with the seed.
        study_labels: keep slices whose label belongs to the whole study (``label_level=study``).
        max_slices: cap per source (evenly spaced, for quick runs); ``None`` = all.
        skip_bad: skip unreadable slices (reported in ``skipped.csv``) instead of stopping.
        published_split: use the train/test split a source publishes (manifest column
            ``split``, e.g. MedSeg's 50/48): published test patients stay in test, published
            train patients are dealt into train and validation; other rows are split as usual.
    """

    sources: list[str] = field(default_factory=lambda: ["../shared/data"])
    cache_dir: str = "~/.cache/lungmtl"
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    balance: float | None = None
    study_labels: bool = True
    max_slices: int | None = None
    skip_bad: bool = False
    published_split: bool = False

    def __post_init__(self) -> None:
        fr = tuple(self.split)
        _need(
            len(fr) == 3 and all(_finite(f) and f >= 0 for f in fr) and abs(sum(fr) - 1) < 1e-6,
            f"split must be 3 non-negative train/val/test fractions summing to 1, got {list(fr)}"
            + (f" (sum {sum(fr):g})" if all(_finite(f) for f in fr) else ""),
        )
        _need(fr[0] > 0 and fr[1] > 0, f"split needs train and val fractions > 0, got {list(fr)}")
        _need(
            self.balance is None or (_finite(self.balance) and self.balance > 0),
            f"balance must be a number > 0 or null, got {self.balance!r}",
        )
        _count("split_seed", self.split_seed, 0)
        _count("max_slices", self.max_slices, 1, none_ok=True)
        _need(bool(self.sources), "sources is empty: give at least one data folder")
        # Absolute from here on: a run's config.yaml (and checkpoint) then finds its data and
        # cache from any working directory ("~" stays, it is no working-directory path).
        self.sources = [absolute_source(s) for s in self.sources]
        self.cache_dir = absolute_source(self.cache_dir, layouts=False)


@dataclass
class LossConfig:
    """Weights of the multi-task loss (see ``lungmtl.losses.MultiTaskLoss``)."""

    seg_weight: float = 1.0
    cls_weight: float = 1.0
    dice_weight: float = 1.0
    bce_weight: float = 0.0
    eps: float = 1.0

    def __post_init__(self) -> None:
        from .losses import MultiTaskLoss  # the loss's own checks, at read time

        try:
            MultiTaskLoss(**dataclasses.asdict(self))
        except InputError as e:
            raise ValueError(e.problem) from None


@dataclass
class OptimConfig:
    """Adam with exponential learning-rate decay per epoch (method.md)."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    lr_decay: float = 0.96

    def __post_init__(self) -> None:
        _need(_finite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr!r}")
        _need(
            _finite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}",
        )
        _share("lr_decay", self.lr_decay, low_open=True)


@dataclass
class AugmentConfig:
    """On-the-fly joint image/mask augmentation (rotations 90/270, shift, zoom, shear).

    ``expand`` repeats the training set per epoch (the paper's 8x offline expansion is
    ``expand: 8``; the copies differ by their random augmentation). ``flip_lr`` / ``flip_ud``:
    probabilities of a left-right / up-down flip. ``intensity``: probability of each of the
    contrast, brightness, gamma, blur and noise changes of
    :func:`lungmtl.data.augment.random_intensity` (0 = off, the paper).
    """

    enabled: bool = True
    rot90: float = 0.5
    shift: float = 0.1
    zoom: tuple[float, float] = (0.9, 1.1)
    shear: float = 10.0
    expand: int = 1
    flip_lr: float = 0.0
    flip_ud: float = 0.0
    intensity: float = 0.0

    def __post_init__(self) -> None:
        _share("rot90", self.rot90)
        _need(
            _finite(self.shift) and 0 <= self.shift < 1,
            f"shift must lie in [0, 1), got {self.shift!r}",
        )
        lo, hi = self.zoom
        _need(
            _finite(lo) and _finite(hi) and 0 < lo <= hi,
            f"zoom must be [low, high] with 0 < low <= high, got {list(self.zoom)}",
        )
        _need(
            _finite(self.shear) and 0 <= self.shear < 90,
            f"shear must lie in [0, 90) degrees, got {self.shear!r}",
        )
        _count("expand", self.expand, 1)
        for name in ("flip_lr", "flip_ud", "intensity"):
            _share(name, getattr(self, name))


@dataclass
class TrainConfig:
    """The loop: epochs, batch, selection, stopping, device.

    ``batch_size`` is per process and micro-batch: a global batch holds
    ``batch_size x processes x grad_accum`` slices. ``compile`` wraps the model in
    ``torch.compile``; it is off by default because on torch 2.11 + H100 (bf16, channels_last)
    the compiled step gave NaN weights after one step in ``benchmarks/compile_check.py``, while
    eager did not (see docs/performance.md); a run that diverges stops with a clear error.
    ``num_workers``: processes that pre-process slices when the run's cache is built (0 or 1:
    in this process); training itself reads the in-memory cache and needs no loader workers.
    ``label_only_fraction`` < 1 draws, each epoch, only that share of the slices that have no
    mask (a fresh random subset; every slice with a mask is used).
    ``ema_decay`` (e.g. 0.99) keeps an exponential moving average of the weights, updated after
    every optimiser step (``torch.optim.swa_utils.AveragedModel``, batch-norm statistics
    included; the decay warms up as ``min(ema_decay, (1 + t) / (10 + t))``); validation,
    ``best.pt`` and early stopping then use the averaged weights, and ``last.pt`` keeps both
    for resuming. ``None`` trains without it (the paper).
    """

    epochs: int = 100
    batch_size: int = 32
    select_metric: str = "val_score"
    early_stopping: int | None = None
    num_workers: int = 0
    device: str = "auto"
    compile: bool = False
    max_steps_per_epoch: int | None = None
    grad_accum: int = 1
    seed: int = 0
    label_only_fraction: float = 1.0
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        _count("epochs", self.epochs, 1)
        _count("batch_size", self.batch_size, 1)
        _count("num_workers", self.num_workers, 0)
        _count("early_stopping", self.early_stopping, 0, none_ok=True)
        _count("max_steps_per_epoch", self.max_steps_per_epoch, 1, none_ok=True)


@dataclass
class RunConfig:
    """Everything a training run needs; written to ``RUN_DIR/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # The network halves the slice side once per level: refuse a size it cannot take now,
        # not after the data set has been built.
        d, size = self.model.divisor, self.preprocess.size
        _need(
            size % d == 0 and size >= 2 * d,
            f"preprocess.size {size} does not suit model {self.model.name!r}: it must be a "
            f"multiple of {d} and at least {2 * d} (e.g. {max(2 * d, round(size / d) * d)})",
        )


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Turn a YAML value into the annotated type, or raise naming the key."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise InputError(where, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value == "None")):
            return None  # YAML's null; "None" (Python's spelling) is read as a string
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise InputError(where, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise InputError(where, f"expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise InputError(where, f"expected a list, got {value!r}")
        return [_convert(args[0], v, where) for v in value]
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is Any or (isinstance(tp, type) and isinstance(value, tp)):
        if tp is int and isinstance(value, bool):
            raise InputError(where, f"expected an integer, got {value!r}")
        return value
    raise InputError(where, f"expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type, d: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys (listing valid ones)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise InputError(where, f"unknown key(s) {unknown}; valid: {names}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(where, str(e)) from None


def comparable(d: Any, ignore: tuple[str, ...] = ()) -> dict | None:
    """A run config dict read back through :class:`RunConfig` (so one written before an option
    existed gets its default), without the dotted keys in ``ignore``; None where ``d`` is not a
    readable run config. Two runs are the same run where these are equal."""
    if not isinstance(d, dict):
        return None
    try:
        out = to_dict(from_dict(RunConfig, d, "run config"))
    except (ValueError, TypeError):  # InputError included
        return None
    for key in ignore:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    return out


def to_dict(cfg: Any) -> dict:
    """Plain, YAML-safe dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise InputError("--set", f"expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError("--set", f"{key!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise InputError("--set", f"{key}: value {raw!r} is not valid YAML ({e})") from None
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults), apply ``--set`` overrides, validate."""
    d: dict = {}
    if path is not None:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError(path, "config file not found") from None
        except yaml.YAMLError as e:
            raise InputError(path, f"not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise InputError(path, "a config must be a mapping of sections")
    apply_overrides(d, overrides or [])
    return from_dict(RunConfig, d, str(path) if path else "config")


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
