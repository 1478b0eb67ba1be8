"""Planning an experiment: every run (variant x held-out source x seed) and its evaluations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import RunConfig, comparable, to_dict
from ..errors import InputError
from .spec import Experiment, run_config, value_label

#: The evaluation of a run on its own test data; extra data folders get ``eval-<folder>``.
MAIN_EVAL = "eval"


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
    extra = {f"eval-{value_label(Path(p).name, 'data')}": [p] for p in exp.eval_data}
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
            held = list(units) if loso is True else list(loso)
            unknown = sorted(set(held) - set(units))
            if unknown:
                raise InputError(
                    exp.path,
                    f"leave_one_source_out names {unknown}, not sources of the run; "
                    f"sources: {list(units)}",
                )
            folds = [
                (name, [u for n, u in units.items() if n != name], [units[name]]) for name in held
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
