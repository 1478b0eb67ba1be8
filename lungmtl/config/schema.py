"""The run config's schema: one pydantic model per section, with the checks of each value."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..data.preprocess import PreprocessConfig
from ..data.sources import absolute_source
from ..errors import InputError
from ..losses import MultiTaskLoss
from ..models import ModelConfig


def _need(ok: bool, problem: str) -> None:
    """Refuse a config value at read time (:func:`from_dict` names the section)."""
    if not ok:
        raise ValueError(problem)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _rule(ok: Callable[[Any], bool], must: str) -> AfterValidator:
    """A check of one key whose message reads ``<key> must <must>, got <value>``."""

    def check(value: Any, info: ValidationInfo) -> Any:
        _need(ok(value), f"{info.field_name} must {must}, got {value!r}")
        return value

    return AfterValidator(check)


def _count(least: int, none_ok: bool = False) -> AfterValidator:
    return _rule(
        lambda v: (none_ok and v is None) or (isinstance(v, int) and v >= least),
        f"be an integer >= {least}{' or null' if none_ok else ''}",
    )


def _share(low_open: bool = False) -> AfterValidator:
    return _rule(
        lambda v: _finite(v) and (0.0 < v <= 1.0 if low_open else 0.0 <= v <= 1.0),
        f"lie in {'(0' if low_open else '[0'}, 1]",
    )


def _yaml_float(value: Any) -> Any:
    try:  # YAML 1.1 reads 1e-4 (no dot) as text
        return float(value) if isinstance(value, str) else value
    except ValueError:  # pydantic refuses it, naming the key
        return value


# The scalars of the sections below read as before: a boolean is no number and a number no
# boolean (pydantic's lax mode would take ``true`` as 1); text such as ``1e-4`` is a float.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, Strict(), BeforeValidator(_yaml_float)]
Share = Annotated[Float, _share()]


_SCALARS = {bool: "bool", int: "int", float: "float"}


def _wrong_scalar(value: Any, tp: Any) -> str | None:
    """What ``tp`` expects where ``value`` is a scalar of the wrong kind (None where it fits):
    a boolean is no number, a number no boolean, a float no int; text is left to pydantic."""
    args = [t for t in (typing.get_args(tp) or (tp,)) if t is not type(None)]
    if typing.get_origin(tp) is tuple:
        items = value if isinstance(value, list | tuple) else ()
        return next((w for v in items if (w := _wrong_scalar(v, args[0])) is not None), None)
    kinds = [t for t in args if t in _SCALARS]
    if not kinds or value is None or isinstance(value, str):
        return None
    fits = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
    }
    return None if any(fits[t] for t in kinds) else _SCALARS[kinds[0]]


def _strict_section(cls: type, d: Any) -> Any:
    """Read a dataclass section (preprocess, model) with the scalar rules of the others."""
    if isinstance(d, dict):
        hints = typing.get_type_hints(cls)
        for key, value in d.items():
            expected = _wrong_scalar(value, hints[key]) if key in hints else None
            if expected is not None:
                raise PydanticCustomError(
                    "strict_scalar",
                    "expected {expected}, got {got}",
                    {"key": key, "expected": expected, "got": value},
                )
    return d


def fields_of(cls: type) -> dict[str, Any]:
    """A section's keys and their types, in order."""
    if issubclass(cls, BaseModel):
        return {k: f.annotation for k, f in cls.model_fields.items()}
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


class _Section(BaseModel):
    """A config section: unknown keys refused, defaults checked like given values."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataConfig(_Section):
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

    sources: list[str] = Field(default_factory=lambda: ["../shared/data"])
    cache_dir: Annotated[str, AfterValidator(partial(absolute_source, layouts=False))] = (
        "~/.cache/lungmtl"
    )
    split: tuple[Float, Float, Float] = (0.6, 0.2, 0.2)
    split_seed: Annotated[Int, _count(0)] = 0
    balance: Annotated[
        Float | None,
        _rule(lambda v: v is None or (_finite(v) and v > 0), "be a number > 0 or null"),
    ] = None
    study_labels: Bool = True
    max_slices: Annotated[Int | None, _count(1, none_ok=True)] = None
    skip_bad: Bool = False
    published_split: Bool = False

    @field_validator("sources", mode="before")
    @classmethod
    def _one_source(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("sources")
    @classmethod
    def _absolute_sources(cls, value: list[str]) -> list[str]:
        _need(bool(value), "sources is empty: give at least one data folder")
        # Absolute from here on: a run's config.yaml (and checkpoint) then finds its data and
        # cache from any working directory ("~" stays, it is no working-directory path).
        return [absolute_source(s) for s in value]

    @field_validator("split")
    @classmethod
    def _fractions(cls, fr: tuple[float, ...]) -> tuple[float, ...]:
        _need(
            all(_finite(f) and f >= 0 for f in fr) and abs(sum(fr) - 1) < 1e-6,
            f"split must be 3 non-negative train/val/test fractions summing to 1, got {list(fr)}"
            + (f" (sum {sum(fr):g})" if all(_finite(f) for f in fr) else ""),
        )
        _need(fr[0] > 0 and fr[1] > 0, f"split needs train and val fractions > 0, got {list(fr)}")
        return fr


class LossConfig(_Section):
    """Weights of the multi-task loss (see ``lungmtl.losses.MultiTaskLoss``)."""

    seg_weight: Float = 1.0
    cls_weight: Float = 1.0
    dice_weight: Float = 1.0
    bce_weight: Float = 0.0
    eps: Float = 1.0
    tversky_alpha: Float = 0.5
    tversky_beta: Float = 0.5
    focal_gamma: Float = 0.0

    @model_validator(mode="after")
    def _loss_checks(self) -> LossConfig:
        try:  # the loss's own checks, at read time
            MultiTaskLoss(**self.model_dump())
        except InputError as e:
            raise ValueError(e.problem) from None
        return self


class OptimConfig(_Section):
    """Adam with exponential learning-rate decay per epoch."""

    lr: Annotated[Float, _rule(lambda v: _finite(v) and v > 0, "be a finite number > 0")] = 2e-4
    weight_decay: Annotated[
        Float, _rule(lambda v: _finite(v) and v >= 0, "be a finite number >= 0")
    ] = 0.0
    lr_decay: Annotated[Float, _share(low_open=True)] = 0.96


class AugmentConfig(_Section):
    """On-the-fly joint image/mask augmentation (rotations 90/270, shift, zoom, shear).

    ``expand`` repeats the training set per epoch (the paper's 8x offline expansion is
    ``expand: 8``; the copies differ by their random augmentation). ``flip_lr`` / ``flip_ud``:
    probabilities of a left-right / up-down flip. ``intensity``: probability of each of the
    contrast, brightness, gamma, blur and noise changes of
    :func:`lungmtl.data.augment.random_intensity` (0 = off, the paper). ``lowres``, ``jpeg``,
    ``clahe``: probabilities of a coarser resolution, a JPEG round trip and CLAHE
    (:func:`lungmtl.data.augment.random_appearance`), looks that differ between hospitals.
    """

    enabled: Bool = True
    rot90: Share = 0.5
    shift: Annotated[Float, _rule(lambda v: _finite(v) and 0 <= v < 1, "lie in [0, 1)")] = 0.1
    zoom: tuple[Float, Float] = (0.9, 1.1)
    shear: Annotated[
        Float, _rule(lambda v: _finite(v) and 0 <= v < 90, "lie in [0, 90) degrees")
    ] = 10.0
    expand: Annotated[Int, _count(1)] = 1
    flip_lr: Share = 0.0
    flip_ud: Share = 0.0
    intensity: Share = 0.0
    lowres: Share = 0.0
    jpeg: Share = 0.0
    clahe: Share = 0.0

    @field_validator("zoom")
    @classmethod
    def _zoom(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        _need(
            _finite(lo) and _finite(hi) and 0 < lo <= hi,
            f"zoom must be [low, high] with 0 < low <= high, got {list(value)}",
        )
        return value


class TrainConfig(_Section):
    """The loop: epochs, batch, selection, stopping, device.

    ``batch_size`` is per process and micro-batch: a global batch holds
    ``batch_size x processes x grad_accum`` slices. ``compile`` wraps the model in
    ``torch.compile`` (off by default, see docs/performance.md); a run that diverges stops with
    a clear error. ``num_workers``: processes that pre-process slices when the run's cache is
    built (0 or 1: in this process); training itself reads the in-memory cache.
    ``label_only_fraction`` < 1 draws, each epoch, only that share of the slices that have no
    mask (a fresh random subset; every slice with a mask is used).
    ``ema_decay`` (e.g. 0.99) keeps an exponential moving average of the weights, updated after
    every optimiser step (``torch.optim.swa_utils.AveragedModel``, batch-norm statistics
    included; the decay warms up as ``min(ema_decay, (1 + t) / (10 + t))``); validation,
    ``best.pt`` and early stopping then use the averaged weights, and ``last.pt`` keeps both
    for resuming. ``None`` trains without it (the paper).
    ``healthy_empty_masks``: slices labelled healthy that have no mask (label-only sources)
    train the segmentation head with an empty mask, since a healthy slice has no infection to
    outline: the decoder then learns to stay silent on healthy lungs of more sources than the
    masked ones (they are still drawn at ``label_only_fraction``).
    """

    epochs: Annotated[Int, _count(1)] = 100
    batch_size: Annotated[Int, _count(1)] = 32
    select_metric: str = "val_score"
    early_stopping: Annotated[Int | None, _count(0, none_ok=True)] = None
    num_workers: Annotated[Int, _count(0)] = 0
    device: str = "auto"
    compile: Bool = False
    max_steps_per_epoch: Annotated[Int | None, _count(1, none_ok=True)] = None
    grad_accum: Int = 1
    seed: Int = 0
    label_only_fraction: Float = 1.0
    ema_decay: Float | None = None
    healthy_empty_masks: Bool = False


class RunConfig(BaseModel):
    """Everything a training run needs; written to ``RUN_DIR/config.yaml``."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("preprocess", "model", mode="before")
    @classmethod
    def _strict_scalars(cls, d: Any, info: ValidationInfo) -> Any:
        return _strict_section(fields_of(cls)[info.field_name], d)

    @model_validator(mode="before")
    @classmethod
    def _yaml_nulls(cls, d: Any) -> Any:
        """Read the text ``None`` (Python's spelling; YAML reads it as a string) as null where a
        key may be null."""
        if not isinstance(d, dict):
            return d
        out = dict(d)
        for section, tp in fields_of(cls).items():
            if isinstance(out.get(section), dict):
                nullable = {k for k, t in fields_of(tp).items() if type(None) in typing.get_args(t)}
                out[section] = {
                    k: None if k in nullable and v == "None" else v for k, v in d[section].items()
                }
        return out

    @model_validator(mode="after")
    def _size_suits_model(self) -> RunConfig:
        # The network halves the slice side once per level: refuse a size it cannot take now,
        # not after the data set has been built.
        d, size = self.model.divisor, self.preprocess.size
        _need(
            size % d == 0 and size >= 2 * d,
            f"preprocess.size {size} does not suit model {self.model.name!r}: it must be a "
            f"multiple of {d} and at least {2 * d} (e.g. {max(2 * d, round(size / d) * d)})",
        )
        return self
