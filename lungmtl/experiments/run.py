"""Running an experiment: train and evaluate each planned run (skipping or reusing finished ones),
then write the tables."""

from __future__ import annotations

import dataclasses
import fnmatch
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ..config import to_dict
from ..errors import InputError
from ..evaluation import evaluate
from ..training import fit
from .plan import PlannedRun, plan
from .spec import Experiment, load_experiment
from .tables import summarise


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did: the plan, the runs trained and skipped, the results."""

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
