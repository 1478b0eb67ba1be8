"""Experiment grids: many ordinary training runs + evaluations, one results table, paired tests.

An experiment YAML (see ``configs/experiments/``)::

    name: paper-grid                 # optional; default: the file's stem
    base: configs/cpu-small.yaml     # run config; relative to the YAML, the working dir or lungmtl
    set: [train.epochs=20]           # optional overrides of the base ("key=value", as ``--set``)
    grid:                            # a product of axes ...
      model.name: [unet, unetpp, resunet]      # a list: values of one config key
      setup:                                   # a mapping: labelled bundles of overrides
        simple: {model.attention: null, preprocess.enhance: []}
        proposed: {model.attention: cbam, preprocess.enhance: [median, opening]}
    runs:                            # ... or a list of named variants (instead of grid)
      - {name: both, set: {}}
      - {name: seg-only, set: {loss.cls_weight: 0}}
    seeds: [0, 1, 2]                 # train.seed of each repeat (the data split stays fixed ...)
    split_seeds: false               # ... unless true: then data.split_seed = seed as well
    baseline: unet-simple            # the variant every other is t-tested against
    leave_one_source_out: false      # train on all sources but one, test on the one left out
    evaluate: {split: test, data: [], batch_size: 32}

Each run trains into ``EXP_DIR/runs/<variant>-seed<k>/`` (``fit``) and is evaluated into its
``eval/`` folder (``lungmtl.evaluation.evaluate``); extra ``evaluate.data`` folders go to
``eval-<folder name>/``. A run whose evaluations all have ``metrics.json`` is finished and skipped
when the experiment is run again; a run with ``last.pt`` but no evaluation resumes training.
At the end ``results.csv`` (mean and std over seeds per variant, with the paired tests against
the baseline), ``results.md`` (the paper's Tables 3, 4, 8 and 9 plus a per-source table),
``runs.csv`` (one row per run), ``per_source.csv`` and ``paired_tests.csv`` are written.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import json
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .compare import paired_tests
from .config import RunConfig, apply_overrides, check_key, comparable, from_dict, to_dict
from .errors import InputError
from .presentation import fmt

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

#: Table 3 (segmentation) and Table 4 (classification) columns: key, heading, scale, digits.
SEG_TABLE = [
    ("pixel_accuracy", "Acc (%)", 100, 2),
    ("mse", "MSE", 1, 4),
    ("psnr", "PSNR (dB)", 1, 2),
    ("ssim", "SSIM", 1, 3),
    ("dice_mean", "Dice (%)", 100, 2),
    ("dice_infected_mean", "Dice infected (%)", 100, 2),
]
CLS_TABLE = [
    ("accuracy", "Acc (%)", 100, 2),
    ("sensitivity", "Sens (%)", 100, 2),
    ("specificity", "Spec (%)", 100, 2),
    ("auc", "AUC (%)", 100, 2),
    ("f1", "F1 (%)", 100, 2),
    ("mcc", "MCC (%)", 100, 2),
]
SOURCE_TABLE = [
    ("accuracy", "Acc (%)", 100, 2),
    ("auc", "AUC (%)", 100, 2),
    ("dice_mean", "Dice (%)", 100, 2),
    ("dice_infected_mean", "Dice infected (%)", 100, 2),
]
CLS_METRICS = ("accuracy", "sensitivity", "specificity", "auc", "precision", "f1", "mcc")
SEG_METRICS = (
    "pixel_accuracy",
    "mse",
    "psnr",
    "ssim",
    "dice_mean",
    "dice_std",
    "dice_infected_mean",
    "iou_mean",
)
METRICS = CLS_METRICS + SEG_METRICS
MAIN_EVAL = "eval"


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
    leave_one_source_out: bool = False
    eval_split: str = "test"
    eval_data: list[str] = field(default_factory=list)
    eval_batch_size: int = 32


@dataclass
class PlannedRun:
    """One training run of an experiment and the evaluations it owes.

    ``evals`` maps an evaluation name (``eval`` or ``eval-<folder>``) to its data folders
    (``None`` = the run's own ``split``).
    """

    name: str
    variant: str
    seed: int
    held_out: str | None
    cfg: RunConfig
    run_dir: Path
    evals: dict[str, list[str] | None]
    split: str = "test"

    def trained_as_planned(self) -> bool:
        """The run folder's config.yaml is this run's config, compared by
        :func:`lungmtl.config.comparable` (the device and the cache folder may differ: they do
        not change what is trained; an option added since has its default)."""
        path = self.run_dir / "config.yaml"
        if not path.is_file():
            return False
        try:
            saved = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            return False
        same = ("train.device", "data.cache_dir")
        saved = comparable(saved, same)
        return saved is not None and saved == comparable(to_dict(self.cfg), same)

    def evaluated(self, ev: str) -> bool:
        """Evaluation ``ev`` exists, of the data this plan asks for, and is newer than best.pt."""
        metrics, best = self.run_dir / ev / "metrics.json", self.run_dir / "best.pt"
        if not metrics.is_file() or not best.is_file():
            return False
        try:
            m = json.loads(metrics.read_text())
        except (OSError, ValueError):
            return False
        data = self.evals[ev]
        want = list(data) if data else f"run split: {self.split}"
        return m.get("data") == want and metrics.stat().st_mtime_ns >= best.stat().st_mtime_ns

    def finished(self) -> bool:
        return self.trained_as_planned() and all(self.evaluated(e) for e in self.evals)

    def status(self) -> str:
        if self.finished():
            return "done"
        return "partial" if (self.run_dir / "last.pt").exists() else "todo"


# ------------------------------------------------------------------ reading the YAML


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
            if not isinstance(item, str) or "=" not in item:
                raise InputError(where, f"expected key=value, got {item!r}")
            k, raw = item.split("=", 1)
            d[k.strip()] = yaml.safe_load(raw)
        value = d
    value = _mapping(value, where)
    for k in value:
        check_key(str(k), where)
    return dict(value)


def _label(value: Any, key: str) -> str:
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
            axes.append([(_label(v, str(axis)), {str(axis): v}) for v in values])
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
        package = Path(__file__).resolve().parent
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
        leave_one_source_out=bool(d.get("leave_one_source_out", False)),
        eval_split=split,
        eval_data=data,
        eval_batch_size=int(ev.get("batch_size", 32)),
    )
    for v in variants:  # fail now, not after hours of training the earlier variants
        run_config(exp, v, seeds[0])
    return exp


# ------------------------------------------------------------------ planning


def _set_dotted(d: dict, key: str, value: Any) -> None:
    node = d
    for part in key.split(".")[:-1]:
        node = node.setdefault(part, {})
    node[key.split(".")[-1]] = value


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
        _set_dotted(d, k, v)
    _set_dotted(d, "train.seed", seed)
    if exp.split_seeds:
        _set_dotted(d, "data.split_seed", seed)
    if sources is not None:
        _set_dotted(d, "data.sources", sources)
    return from_dict(RunConfig, d, where)


def source_units(sources: list[str]) -> dict[str, str]:
    """Name -> data entry of each source a leave-one-source-out experiment can hold out.

    A folder of manifest folders (like ``../shared/data``) expands to its sub-folders; a manifest
    folder or any other entry (``layout:path`` too) is one source named by its folder.
    """
    units: dict[str, str] = {}

    def add(name: str, entry: str) -> None:
        if name in units and units[name] != entry:
            raise InputError(
                entry,
                f"two data sources are named {name!r} ({units[name]} and {entry}): a "
                "leave-one-source-out fold is named by its folder; rename one of them",
            )
        units[name] = entry

    for entry in sources:
        text = str(entry)
        path = Path(text.split(":", 1)[1] if re.match(r"^[a-z0-9-]+:", text) else text)
        path = path.expanduser()
        if path.is_dir() and not (path / "manifest.csv").is_file():
            subs = sorted(s for s in path.iterdir() if (s / "manifest.csv").is_file())
            if subs:
                for sub in subs:
                    add(sub.name, str(sub))
                continue
        if not path.exists():
            raise InputError(path, "data source not found")
        add(path.name, text)
    return units


def plan(
    exp: Experiment, out: str | Path, leave_one_source_out: bool | None = None
) -> list[PlannedRun]:
    """Every run of the experiment, in order (variant-major, then held-out source, then seed)."""
    out = Path(out)
    loso = exp.leave_one_source_out if leave_one_source_out is None else leave_one_source_out
    runs = []
    extra = {f"eval-{_label(Path(p).name, 'data')}": [p] for p in exp.eval_data}
    if len(extra) < len(exp.eval_data):
        names = [Path(p).name for p in exp.eval_data]
        raise InputError(
            exp.path, f"evaluate.data folders share a name {names}: their evaluations would clash"
        )
    for v in exp.variants:
        base_cfg = run_config(exp, v, exp.seeds[0])
        folds: list[tuple[str | None, list[str] | None, list[str] | None]] = [(None, None, None)]
        if loso:
            units = source_units(base_cfg.data.sources)
            if len(units) < 2:
                raise InputError(
                    exp.path, f"leave-one-source-out needs at least two sources, got {list(units)}"
                )
            folds = [
                (name, [u for n, u in units.items() if n != name], [entry])
                for name, entry in units.items()
            ]
        for held_out, train_sources, test_data in folds:
            for seed in exp.seeds:
                name = (
                    f"{v.name}-seed{seed}"
                    if held_out is None
                    else (f"{v.name}-without-{held_out}-seed{seed}")
                )
                evals: dict[str, list[str] | None] = {MAIN_EVAL: test_data}
                evals.update(extra)
                runs.append(
                    PlannedRun(
                        name=name,
                        variant=v.name,
                        seed=seed,
                        held_out=held_out,
                        cfg=run_config(exp, v, seed, train_sources),
                        run_dir=out / "runs" / name,
                        evals=evals,
                        split=exp.eval_split,
                    )
                )
    return runs


# ------------------------------------------------------------------ running


@dataclass
class ExperimentResult:
    out: Path
    runs: list[PlannedRun]
    trained: list[str]
    skipped: list[str]
    results: pd.DataFrame


def run_experiment(
    path: str | Path,
    out: str | Path,
    *,
    extra_set: list[str] | None = None,
    base: str | Path | None = None,
    leave_one_source_out: bool | None = None,
    only: list[str] | None = None,
    reuse: list[str | Path] | None = None,
    dry_run: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> ExperimentResult:
    """Train and evaluate every run of an experiment YAML (skipping finished ones), then tabulate.

    Args:
        path: the experiment YAML.
        out: the experiment folder (``runs/``, ``results.csv``, ``results.md``, ...).
        extra_set: ``key=value`` overrides for every run (e.g. ``train.device=cuda``).
        base: a run config replacing the YAML's ``base`` (e.g. ``configs/paper-unet.yaml``).
        leave_one_source_out: override the YAML's ``leave_one_source_out``.
        only: run only the runs whose name matches one of these shell patterns (the table still
            lists every finished run); lets a grid be shared between machines.
        dry_run: print the plan and each run's status, train nothing.
        progress: progress bars inside training and evaluation.
        echo: where one-line status messages go.

    Returns:
        An :class:`ExperimentResult` (``results`` is the results.csv table).
    """
    from .evaluation import evaluate
    from .training import fit

    exp = load_experiment(path, extra_set, base)
    out = Path(out)
    runs = plan(exp, out, leave_one_source_out)
    chosen = [r for r in runs if not only or any(fnmatch.fnmatch(r.name, p) for p in only)]
    if only and not chosen:
        raise InputError(path, f"--only {only} matches no run; runs: {[r.name for r in runs]}")
    if dry_run:
        for r in runs:
            echo(f"{r.status():8} {r.name}")
        return ExperimentResult(out, runs, [], [], pd.DataFrame())
    out.mkdir(parents=True, exist_ok=True)
    _write_plan(exp, runs, out)
    trained, skipped = [], []
    for i, r in enumerate(chosen, 1):
        if r.finished():
            skipped.append(r.name)
            echo(f"[{i}/{len(chosen)}] {r.name}: finished, skipped")
            continue
        source = None if r.run_dir.exists() else find_identical_run(r, reuse or [])
        if source is not None:
            copy_run(source, r.run_dir)
            skipped.append(r.name)
            echo(f"[{i}/{len(chosen)}] {r.name}: identical to {source}, copied")
            continue
        echo(
            f"[{i}/{len(chosen)}] {r.name}: training"
            + (" (resuming)" if r.status() == "partial" else "")
        )
        # resume=True continues from last.pt where one exists (an interrupted run, or one given
        # more epochs) and starts afresh otherwise; a changed config is refused by fit with a
        # clear error. Evaluations older than best.pt, or of other data, are redone.
        fit(r.cfg, r.run_dir, resume=True, progress=progress)
        for ev, data in r.evals.items():
            if r.evaluated(ev):
                continue
            evaluate(
                r.run_dir / "best.pt",
                r.run_dir / ev,
                data=data,
                split=exp.eval_split,
                device=r.cfg.train.device,
                batch_size=exp.eval_batch_size,
                progress=progress,
            )
        trained.append(r.name)
    results = summarise(exp, runs, out)
    echo(f"results: {out / 'results.md'}")
    return ExperimentResult(out, runs, trained, skipped, results)


def find_identical_run(r: PlannedRun, folders: list[str | Path]) -> Path | None:
    """A run under ``folder/runs/`` that is ``r`` finished, or None: trained with the same
    config (as :meth:`PlannedRun.trained_as_planned` compares them, not the raw YAML: a run on
    another device, or from before an option existed, is the same run) and evaluated on the
    data ``r`` is to be evaluated on."""
    for folder in folders:
        for cand in sorted(Path(folder).glob("runs/*")):
            if dataclasses.replace(r, run_dir=cand).finished():
                return cand
    return None


def copy_run(source: Path, run_dir: Path) -> None:
    """Copy a finished run folder atomically (a temporary name, then a rename)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.parent / f".{run_dir.name}.copying"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    tmp.rename(run_dir)


def _write_plan(exp: Experiment, runs: list[PlannedRun], out: Path) -> None:
    (out / "experiment.yaml").write_text(
        yaml.safe_dump(
            {
                "name": exp.name,
                "source": str(exp.path),
                "base": str(exp.base),
                "set": exp.base_set,
                "seeds": exp.seeds,
                "split_seeds": exp.split_seeds,
                "baseline": exp.baseline,
                "variants": {v.name: v.overrides for v in exp.variants},
                "runs": {r.name: to_dict(r.cfg) for r in runs},
            },
            sort_keys=False,
        )
    )


# ------------------------------------------------------------------ tabulating


def _single_task(cfg: RunConfig) -> tuple[bool, bool]:
    """(classification meaningful, segmentation meaningful) for a run's loss weights."""
    return cfg.loss.cls_weight > 0, cfg.loss.seg_weight > 0


def _keep(block: dict, cls_ok: bool, seg_ok: bool) -> dict:
    return {
        k: block.get(k) if (k in CLS_METRICS and cls_ok) or (k in SEG_METRICS and seg_ok) else None
        for k in METRICS
    }


def collect(runs: list[PlannedRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per finished run evaluation (``runs.csv``) and per run x source (per-source).

    Metrics of an untrained head (a single-task run) are blanked: they are noise, not results.
    """
    rows, per_source = [], []
    for r in runs:
        cls_ok, seg_ok = _single_task(r.cfg)
        for ev in r.evals:
            f = r.run_dir / ev / "metrics.json"
            if not f.exists():
                continue
            m = json.loads(f.read_text())
            key = {
                "variant": r.variant,
                "held_out": r.held_out or "",
                "evaluation": ev,
                "seed": r.seed,
                "run": r.name,
            }

            rows.append({**key, "n_slices": m.get("n_slices"), **_keep(m, cls_ok, seg_ok)})
            for src, block in (m.get("per_source") or {}).items():
                per_source.append(
                    {
                        **key,
                        "source": src,
                        "n_slices": block.get("n_slices"),
                        **_keep(block, cls_ok, seg_ok),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(per_source)


def _mean_std(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and sample std (ddof 1) over seeds of every metric, per group."""
    out = []
    for keys, part in frame.groupby(by, sort=False):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
        row["n_seeds"] = len(part)
        row["seeds"] = " ".join(str(s) for s in sorted(part["seed"]))
        row["n_slices"] = part["n_slices"].iloc[0]
        for k in METRICS:
            v = pd.to_numeric(part[k], errors="coerce").dropna()
            row[f"{k}_mean"] = v.mean() if len(v) else np.nan
            row[f"{k}_std"] = v.std(ddof=1) if len(v) > 1 else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _predictions(r: PlannedRun, ev: str) -> pd.DataFrame:
    p = pd.read_csv(r.run_dir / ev / "predictions.csv")
    cls_ok, seg_ok = _single_task(r.cfg)
    if not seg_ok:
        p["dice"] = np.nan
    if not cls_ok:
        p["correct"] = False
    return p


def _test(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    try:
        with warnings.catch_warnings():  # near-identical runs: scipy warns, the p-value stands
            warnings.simplefilter("ignore", RuntimeWarning)
            return paired_tests(a, b)
    except InputError as e:
        return {"error": e.problem}


def paired_against_baseline(exp: Experiment, runs: list[PlannedRun]) -> pd.DataFrame:
    """Paired tests of every variant against the baseline: per seed pair and pooled over seeds.

    Runs are matched by seed (and held-out source and evaluation); pooling concatenates the
    per-slice arrays of all matched seeds (slice keys are made unique per seed) and tests once.
    """
    if exp.baseline is None:
        return pd.DataFrame()
    done = {(r.variant, r.held_out, r.seed): r for r in runs}
    rows = []
    for r0 in runs:
        if r0.variant == exp.baseline or r0.seed != exp.seeds[0]:
            continue  # one entry per (variant, held-out source); seeds are looped below
        base_cls, base_seg = _single_task(done[(exp.baseline, r0.held_out, r0.seed)].cfg)
        cls_ok, seg_ok = _single_task(r0.cfg)
        mine: list[dict] = []
        for ev in r0.evals:
            pooled_a, pooled_b, seeds = [], [], []
            for seed in exp.seeds:
                ra, rb = (
                    done[(r0.variant, r0.held_out, seed)],
                    done[(exp.baseline, r0.held_out, seed)],
                )
                if not all((x.run_dir / ev / "predictions.csv").exists() for x in (ra, rb)):
                    continue
                a, b = _predictions(ra, ev), _predictions(rb, ev)
                mine.append(_test_row(r0, ev, str(seed), _test(a, b)))
                a["image"] = f"{seed}|" + a["image"].astype(str)
                b["image"] = f"{seed}|" + b["image"].astype(str)
                pooled_a.append(a)
                pooled_b.append(b)
                seeds.append(seed)
            if len(seeds) > 1:
                t = _test(pd.concat(pooled_a), pd.concat(pooled_b))
                mine.append(_test_row(r0, ev, "pooled", t))
        for row in mine:  # a test involving an untrained head says nothing
            if not (cls_ok and base_cls):
                row.update(correct_t=None, correct_p=None, mcnemar_p=None, acc=None, acc_base=None)
            if not (seg_ok and base_seg):
                row.update(
                    dice_t=None,
                    dice_p=None,
                    dice_patients_p=None,
                    dice=None,
                    dice_base=None,
                    n_dice=None,
                )
        rows += mine
    return pd.DataFrame(rows)


def headline_tests(tests: pd.DataFrame) -> pd.DataFrame:
    """One test per (variant, held-out source, evaluation): pooled over seeds where more than
    one seed was paired, else the single seed's test."""
    keys = ["variant", "held_out", "evaluation"]
    pooled = tests[tests["seeds"] == "pooled"]
    have = set(map(tuple, pooled[keys].to_numpy()))
    single = tests[tests["seeds"] != "pooled"]
    single = single[[tuple(k) not in have for k in single[keys].to_numpy()]]
    return pd.concat([pooled, single]).sort_index()


def _test_row(r: PlannedRun, ev: str, seeds: str, t: dict) -> dict:
    row = {
        "variant": r.variant,
        "held_out": r.held_out or "",
        "evaluation": ev,
        "seeds": seeds,
        "error": t.get("error", ""),
    }
    if "error" in t:
        return row
    d, c, mc = t["dice"], t["correct"], t["mcnemar"]
    row.update(
        n_slices=t["n_slices"],
        n_dice=d["n"],
        dice=d["mean_a"],
        dice_base=d["mean_b"],
        dice_t=d["t"],
        dice_p=d["p"],
        dice_patients_p=t["dice_patients"]["p"],
        n_patients_dice=t["dice_patients"]["n"],
        acc=c["acc_a"],
        acc_base=c["acc_b"],
        correct_t=c["t"],
        correct_p=c["p"],
        mcnemar_b=mc["a_right_b_wrong"],
        mcnemar_c=mc["a_wrong_b_right"],
        mcnemar_p=mc["p"],
    )
    return row


def summarise(
    exp: Experiment, runs: list[PlannedRun], out: str | Path, alpha: float = 0.05
) -> pd.DataFrame:
    """Write runs.csv, per_source.csv, paired_tests.csv, results.csv and results.md.

    Returns:
        The results table: one row per variant (x held-out source x evaluation) with the mean and
        std over seeds of every metric and the pooled paired tests against the baseline.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_run, per_source = collect(runs)
    per_run.to_csv(out / "runs.csv", index=False)
    if per_run.empty:
        (out / "results.md").write_text(f"# Experiment {exp.name}\n\nNo finished runs yet.\n")
        pd.DataFrame().to_csv(out / "results.csv", index=False)
        return pd.DataFrame()
    by = ["variant", "held_out", "evaluation"]
    results = _mean_std(per_run, by)
    src = _mean_std(per_source, [*by, "source"]) if not per_source.empty else pd.DataFrame()
    src.to_csv(out / "per_source.csv", index=False)
    tests = paired_against_baseline(exp, runs)
    tests.to_csv(out / "paired_tests.csv", index=False)
    test_cols = [
        "dice_t",
        "dice_p",
        "dice_patients_p",
        "correct_t",
        "correct_p",
        "mcnemar_p",
        "n_slices",
    ]
    if not tests.empty:
        pooled = headline_tests(tests).reindex(columns=[*by, *test_cols])
        pooled = pooled.rename(columns={c: f"vs_baseline_{c}" for c in test_cols})
        results = results.merge(pooled, on=by, how="left")
    else:
        for c in test_cols:
            results[f"vs_baseline_{c}"] = np.nan
    results.insert(0, "experiment", exp.name)
    results["baseline"] = exp.baseline or ""
    results.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(_markdown(exp, results, src, tests, alpha))
    return results


def _pm(row: pd.Series, key: str, scale: float, digits: int) -> str:
    m, s = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if m is None or not np.isfinite(m):
        return "n/a"
    text = fmt(float(m), scale, digits)
    return text if s is None or not np.isfinite(s) else f"{text} ± {fmt(float(s), scale, digits)}"


def _label_of(row: pd.Series) -> str:
    name = row["variant"]
    if row.get("held_out"):
        name += f" (held out: {row['held_out']})"
    if row.get("evaluation", MAIN_EVAL) != MAIN_EVAL:
        name += f" [{row['evaluation']}]"
    return name


def _table(
    frame: pd.DataFrame, columns: list[tuple[str, str, float, int]], first: list[str]
) -> str:
    head = "| " + " | ".join(first + [c[1] for c in columns]) + " |"
    lines = [head, "|---" * (len(first) + len(columns)) + "|"]
    for _, row in frame.iterrows():
        cells = [_label_of(row), str(row["n_seeds"]), str(row["n_slices"])]
        if "source" in frame.columns:
            cells.insert(1, str(row["source"]))
        lines.append(
            "| " + " | ".join(cells + [_pm(row, k, s, d) for k, _, s, d in columns]) + " |"
        )
    return "\n".join(lines)


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}"


def _markdown(
    exp: Experiment, results: pd.DataFrame, src: pd.DataFrame, tests: pd.DataFrame, alpha: float
) -> str:
    first = ["model", "seeds", "test slices"]
    parts = [
        f"# Experiment {exp.name}",
        "",
        f"Base config `{exp.base}`"
        + (f" with `{'`, `'.join(exp.base_set)}`" if exp.base_set else "")
        + f"; seeds {exp.seeds} (train.seed"
        + (
            ", and data.split_seed"
            if exp.split_seeds
            else "; the patient split is the same for all"
        )
        + "). Values are mean ± sample std over seeds; n/a = undefined, or a head that was not"
        " trained (single-task runs). Evaluations on the runs' "
        + f"`{exp.eval_split}` split"
        + (
            " (leave-one-source-out: on the held-out source)."
            if (results["held_out"] != "").any()
            else "."
        )
        + " See runs.csv for every run.",
        "",
        "## Segmentation (Table 3 layout)",
        "",
        _table(results, SEG_TABLE, first),
        "",
        "## Classification (Table 4 layout)",
        "",
        _table(results, CLS_TABLE, first),
        "",
    ]
    if not src.empty:
        parts += [
            "## Per source",
            "",
            _table(src, SOURCE_TABLE, ["model", "source", "seeds", "test slices"]),
            "",
        ]
    if not tests.empty:
        shown = headline_tests(tests)
        how = (
            "pooled over seeds: the per-slice arrays of runs with the same seed are concatenated"
            " and tested once (per-seed tests: paired_tests.csv; a variant with one finished"
            " seed shows that seed's test)"
            if (shown["seeds"] == "pooled").any()
            else "one seed"
        )
        parts += [
            f"## Paired tests against `{exp.baseline}` (Tables 8 and 9 layout)",
            "",
            f"Two-sided paired t-tests, alpha = {alpha}, {how}. Table 8: per-slice Dice (slices"
            " with a mask); Table 9: per-slice correctness of the infected/healthy call, with"
            " exact McNemar (b = only this model right, c = only the baseline right)."
            " Slice-level tests treat a patient's slices as independent; p (patients) pairs"
            " per-patient mean Dice instead, the more conservative reading.",
            "",
            "| model | seeds | n | Dice | Dice base | t | p | p (patients) | significant |",
            "|---" * 9 + "|",
        ]
        for _, t in shown.iterrows():
            if t.get("error"):
                parts.append(f"| {_label_of(t)} | {t['seeds']} | {t['error']} |||||||")
                continue
            sig = t["dice_p"] is not None and np.isfinite(t["dice_p"]) and t["dice_p"] < alpha
            parts.append(
                f"| {_label_of(t)} | {t['seeds']} | {fmt(t['n_dice'], 1, 0)} "
                f"| {fmt(t['dice'], 100)} | {fmt(t['dice_base'], 100)} "
                f"| {fmt(t['dice_t'], 1, 3)} | {_p(t['dice_p'])} "
                f"| {_p(t.get('dice_patients_p'))} (n={fmt(t.get('n_patients_dice'), 1, 0)}) "
                f"| {'yes' if sig else 'no'} |"
            )
        parts += [
            "",
            "| model | seeds | n | Acc | Acc base | t | p | McNemar b/c | p (McNemar) "
            "| significant |",
            "|---" * 10 + "|",
        ]
        for _, t in shown.iterrows():
            if t.get("error"):
                continue
            sig = (
                t["correct_p"] is not None
                and np.isfinite(t["correct_p"])
                and t["correct_p"] < alpha
            )
            mc = (
                "n/a"
                if t["mcnemar_p"] is None or not np.isfinite(t["mcnemar_p"])
                else f"{int(t['mcnemar_b'])}/{int(t['mcnemar_c'])}"
            )
            parts.append(
                f"| {_label_of(t)} | {t['seeds']} | {t['n_slices']} | {fmt(t['acc'], 100)} "
                f"| {fmt(t['acc_base'], 100)} | {fmt(t['correct_t'], 1, 3)} "
                f"| {_p(t['correct_p'])} | {mc} | {_p(t['mcnemar_p'])} | {'yes' if sig else 'no'} |"
            )
        parts.append("")
    return "\n".join(parts)
