"""The experiment YAML: its schema, its checks, and each variant's run config.

The format is described in docs/experiments.md. Every variant's config is built while the YAML is
read, so a bad key or value fails before any training starts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, apply_overrides, check_key, from_dict, parse_override, set_dotted
from ..errors import InputError

#: Top-level keys of an experiment YAML.
EXPERIMENT_KEYS = (
    "name",
    "description",
    "base",
    "set",
    "grid",
    "runs",
    "seeds",
    "split_seeds",
    "baseline",
    "leave_one_source_out",
    "evaluate",
)
EVALUATE_KEYS = ("split", "data", "batch_size")
RUN_KEYS = ("name", "set")


@dataclass(frozen=True)
class Variant:
    """One point of the grid: a name and the config overrides (dotted key -> value)."""

    name: str
    overrides: dict[str, Any]


@dataclass
class Experiment:
    """A parsed and validated experiment YAML (paths resolved)."""

    path: Path
    name: str
    base: Path
    base_set: list[str]
    variants: list[Variant]
    seeds: list[int]
    split_seeds: bool = False
    baseline: str | None = None
    leave_one_source_out: bool | list[str] = False
    eval_split: str = "test"
    eval_data: list[str] = field(default_factory=list)
    eval_batch_size: int = 32


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(where, f"expected a mapping, got {value!r}")
    return value


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """A variant's overrides as a dict: a mapping, or a list of ``key=value`` strings."""
    if value is None:
        return {}
    if isinstance(value, list):
        d: dict[str, Any] = {}
        for item in value:
            k, v = parse_override(item, where)
            d[k] = v
        value = d
    value = _mapping(value, where)
    for k in value:
        check_key(str(k), where)
    return dict(value)


def value_label(value: Any, key: str) -> str:
    """A short, file-name-safe label of one grid value."""
    leaf = key.rsplit(".", 1)[-1]
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = f"{leaf}-{str(value).lower()}"
    elif isinstance(value, int | float):
        text = f"{leaf}{value:g}"
    elif isinstance(value, list | tuple):
        text = "+".join(str(v) for v in value) or "none"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _grid(grid: Any, where: str) -> list[Variant]:
    axes = []
    for axis, values in _mapping(grid, where).items():
        w = f"{where}: grid.{axis}"
        if isinstance(values, dict):  # labelled bundles of overrides
            if not values:
                raise InputError(w, "an axis needs at least one option")
            axes.append(
                [
                    (re.sub(r"[^A-Za-z0-9._+-]", "_", str(lab)), _overrides(o, f"{w}.{lab}"))
                    for lab, o in values.items()
                ]
            )
        elif isinstance(values, list) and values:
            check_key(str(axis), w)
            axes.append([(value_label(v, str(axis)), {str(axis): v}) for v in values])
        else:
            raise InputError(
                w, "expected a non-empty list of values or a mapping of labelled overrides"
            )
    variants = []
    for combo in itertools.product(*axes):
        over: dict[str, Any] = {}
        for _, o in combo:
            over.update(o)
        variants.append(Variant("-".join(lab for lab, _ in combo), over))
    return variants


def _runs(runs: Any, where: str) -> list[Variant]:
    if not isinstance(runs, list) or not runs:
        raise InputError(where, "runs: expected a non-empty list of {name, set} entries")
    out = []
    for i, r in enumerate(runs):
        w = f"{where}: runs[{i}]"
        r = _mapping(r, w)
        unknown = sorted(set(r) - set(RUN_KEYS))
        if unknown or "name" not in r:
            raise InputError(w, f"unknown key(s) {unknown} or no name; valid: {list(RUN_KEYS)}")
        name = str(r["name"])
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise InputError(w, f"name {name!r} must use only letters, digits and ._+-")
        out.append(Variant(name, _overrides(r.get("set"), w)))
    return out


def _find_base(base: str, yaml_path: Path) -> Path:
    """The base run config: absolute, or relative to the YAML, the working dir or the installed
    package (whose ``configs/`` are the repository's, so ``configs/cpu-small.yaml`` is found
    without a checkout)."""
    p = Path(base).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        package = Path(__file__).resolve().parents[1]  # lungmtl/
        candidates = [yaml_path.parent / p, Path.cwd() / p, package / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise InputError(yaml_path, f"base config {base!r} not found (looked at {candidates})")


def load_experiment(
    path: str | Path, extra_set: list[str] | None = None, base: str | Path | None = None
) -> Experiment:
    """Read and validate an experiment YAML.

    Args:
        path: the experiment YAML.
        extra_set: more ``key=value`` overrides applied to every run (after the YAML's ``set``).
        base: a run config replacing the YAML's ``base`` (e.g. the full-scale GPU config).

    Returns:
        The :class:`Experiment`; every variant's config has been built once, so a bad key or
        value fails here, naming the YAML.
    """
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "experiment file not found") from None
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML: {e}") from None
    d = _mapping(d, str(path))
    unknown = sorted(set(d) - set(EXPERIMENT_KEYS))
    if unknown:
        raise InputError(path, f"unknown key(s) {unknown}; valid: {list(EXPERIMENT_KEYS)}")
    if "base" not in d:
        raise InputError(path, "no 'base:' run config given")
    if ("grid" in d) == ("runs" in d):
        raise InputError(path, "give exactly one of 'grid:' (a product) or 'runs:' (a list)")
    variants = _grid(d["grid"], str(path)) if "grid" in d else _runs(d["runs"], str(path))
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(path, f"variant names repeat {dup}: use labelled grid axes or 'runs:'")
    base_set = d.get("set") or []
    if isinstance(base_set, str) or not isinstance(base_set, list):
        raise InputError(path, f"set: expected a list of key=value strings, got {base_set!r}")
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise InputError(path, f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(path, f"seeds repeat: {seeds}")
    ev = _mapping(d.get("evaluate") or {}, f"{path}: evaluate")
    bad = sorted(set(ev) - set(EVALUATE_KEYS))
    if bad:
        raise InputError(path, f"evaluate: unknown key(s) {bad}; valid: {list(EVALUATE_KEYS)}")
    split = ev.get("split", "test")
    if split not in ("train", "val", "test"):
        raise InputError(path, f"evaluate.split must be train, val or test, got {split!r}")
    data = ev.get("data") or []
    data = [data] if isinstance(data, str) else [str(x) for x in data]
    baseline = d.get("baseline")
    if baseline is not None and str(baseline) not in names:
        raise InputError(path, f"baseline {baseline!r} is not a variant; variants: {names}")
    exp = Experiment(
        path=path.resolve(),
        name=str(d.get("name") or path.stem),
        base=_find_base(str(base or d["base"]), path),
        base_set=[str(s) for s in base_set] + list(extra_set or []),
        variants=variants,
        seeds=seeds,
        split_seeds=bool(d.get("split_seeds", False)),
        baseline=None if baseline is None else str(baseline),
        leave_one_source_out=_loso(d.get("leave_one_source_out", False), path),
        eval_split=split,
        eval_data=data,
        eval_batch_size=int(ev.get("batch_size", 32)),
    )
    for v in variants:  # fail now, not after hours of training the earlier variants
        run_config(exp, v, seeds[0])
    return exp


def _loso(value, path: Path) -> bool | list[str]:
    """``leave_one_source_out``: true (every source in turn), false, or the list of sources to
    hold out in turn (e.g. the two with whole annotated scans, for recipe selection)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InputError(
            path, f"leave_one_source_out: expected true, false or a list of sources, got {value!r}"
        )
    return [str(n) for n in names]


def run_config(
    exp: Experiment, variant: Variant, seed: int, sources: list[str] | None = None
) -> RunConfig:
    """The run config of one variant and seed (optionally with ``data.sources`` replaced)."""
    where = f"{exp.path}: variant {variant.name}"
    try:
        d = yaml.safe_load(exp.base.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(exp.base, f"not valid YAML: {e}") from None
    apply_overrides(d, exp.base_set)
    for k, v in variant.overrides.items():
        set_dotted(d, k, v, where)
    set_dotted(d, "train.seed", seed)
    if exp.split_seeds:
        set_dotted(d, "data.split_seed", seed)
    if sources is not None:
        set_dotted(d, "data.sources", sources)
    return from_dict(RunConfig, d, where)
