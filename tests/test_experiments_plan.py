"""experiments/plan.py: the runs of a grid or a leave-one-source-out experiment, their status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from experiment_helpers import tiny_base, write_yaml

from lungmtl.config import to_dict
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.errors import InputError
from lungmtl.experiments.plan import plan, source_units
from lungmtl.experiments.spec import load_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp-phantom")
    return write_phantom_dataset(root / "data", n_patients=8, n_slices=4, size=64, seed=3)


def test_grid_axes_and_labelled_bundles(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    spec = write_yaml(
        tmp_path / "g.yaml",
        base=base,
        grid={
            "model.name": ["unet", "resunet"],
            "setup": {
                "simple": {"model.attention": None, "preprocess.enhance": []},
                "proposed": {"model.attention": "cbam", "preprocess.enhance": ["median"]},
            },
        },
        seeds=[0, 1, 2],
        split_seeds=True,
    )
    exp = load_experiment(spec)
    assert [v.name for v in exp.variants] == [
        "unet-simple",
        "unet-proposed",
        "resunet-simple",
        "resunet-proposed",
    ]
    runs = plan(exp, tmp_path / "out")
    assert len(runs) == 12
    r = next(r for r in runs if r.name == "resunet-proposed-seed2")
    assert (r.cfg.model.name, r.cfg.model.attention, r.cfg.preprocess.enhance) == (
        "resunet",
        "cbam",
        ("median",),
    )
    assert r.cfg.train.seed == r.cfg.data.split_seed == 2


def test_leave_one_source_out_plans_one_fold_per_source(tmp_path):
    alpha = write_phantom_dataset(tmp_path / "d" / "alpha", n_patients=2, n_slices=4, size=32)
    beta = write_phantom_dataset(tmp_path / "d" / "beta", n_patients=2, n_slices=4, size=32)
    base = tiny_base(tmp_path / "base.yaml", [tmp_path / "d"], tmp_path / "cache")
    spec = write_yaml(
        tmp_path / "l.yaml",
        base=base,
        runs=[{"name": "m", "set": {}}],
        seeds=[0, 1],
        evaluate={"data": [str(alpha)]},
    )
    exp = load_experiment(spec)
    assert [r.name for r in plan(exp, tmp_path / "out")] == ["m-seed0", "m-seed1"]
    runs = plan(exp, tmp_path / "out", leave_one_source_out=True)
    assert [r.name for r in runs] == [
        "m-without-alpha-seed0",
        "m-without-alpha-seed1",
        "m-without-beta-seed0",
        "m-without-beta-seed1",
    ]
    r = runs[0]
    assert r.held_out == "alpha" and r.cfg.data.sources == [str(beta)]
    assert r.evals == {"eval": [str(alpha)], "eval-alpha": [str(alpha)]}
    assert r.run_dir == tmp_path / "out" / "runs" / "m-without-alpha-seed0"
    one = tiny_base(tmp_path / "one.yaml", [alpha], tmp_path / "cache")
    exp = load_experiment(write_yaml(tmp_path / "o.yaml", base=one, runs=[{"name": "m"}]))
    with pytest.raises(InputError, match="at least two sources"):
        plan(exp, tmp_path / "out", leave_one_source_out=True)


def test_leave_one_source_out_can_name_the_sources_to_hold_out(tmp_path):
    for name in ("alpha", "beta", "gamma"):
        write_phantom_dataset(tmp_path / "d" / name, n_patients=2, n_slices=4, size=32)
    base = tiny_base(tmp_path / "base.yaml", [tmp_path / "d"], tmp_path / "cache")
    spec = write_yaml(
        tmp_path / "l.yaml", base=base, runs=[{"name": "m"}], leave_one_source_out=["gamma"]
    )
    runs = plan(load_experiment(spec), tmp_path / "out")
    assert [r.name for r in runs] == ["m-without-gamma-seed0"]
    assert [Path(s).name for s in runs[0].cfg.data.sources] == ["alpha", "beta"]
    assert runs[0].evals["eval"] == [str(tmp_path / "d" / "gamma")]
    bad = write_yaml(
        tmp_path / "b.yaml", base=base, runs=[{"name": "m"}], leave_one_source_out=["delta"]
    )
    with pytest.raises(InputError, match="delta"):
        plan(load_experiment(bad), tmp_path / "out")
    with pytest.raises(InputError, match="leave_one_source_out"):
        load_experiment(
            write_yaml(tmp_path / "c.yaml", base=base, runs=[{"name": "m"}], leave_one_source_out=3)
        )


def test_extra_evaluation_folders_must_have_distinct_names(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    spec = write_yaml(
        tmp_path / "e.yaml",
        base=base,
        runs=[{"name": "m"}],
        evaluate={"data": ["/x/data", "/y/data"]},
    )
    with pytest.raises(InputError, match="share a name"):
        plan(load_experiment(spec), tmp_path / "out")


def test_source_units_expand_a_folder_of_sources(tmp_path):
    alpha = write_phantom_dataset(tmp_path / "alpha", n_patients=2, n_slices=4, size=32)
    beta = write_phantom_dataset(tmp_path / "beta", n_patients=2, n_slices=4, size=32)
    assert source_units([str(tmp_path)]) == {"alpha": str(alpha), "beta": str(beta)}
    assert source_units([f"manifest:{alpha}"]) == {"alpha": f"manifest:{alpha}"}
    with pytest.raises(InputError, match="data source not found"):
        source_units([str(tmp_path / "missing")])


def test_a_run_is_finished_only_when_trained_and_evaluated_as_planned(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    exp = load_experiment(write_yaml(tmp_path / "e.yaml", base=base, runs=[{"name": "m"}]))
    (r,) = plan(exp, tmp_path / "out")
    assert r.status() == "todo"
    r.run_dir.mkdir(parents=True)
    (r.run_dir / "last.pt").write_bytes(b"")
    assert r.status() == "partial"
    saved = to_dict(r.cfg)
    saved["train"]["device"] = "cuda:3"  # the device does not change what is trained
    (r.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    (r.run_dir / "best.pt").write_bytes(b"")
    metrics = r.run_dir / "eval" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"data": "run split: val"}))
    assert r.trained_as_planned() and not r.evaluated("eval")  # evaluated on other data
    metrics.write_text(json.dumps({"data": "run split: test"}))
    assert r.finished() and r.status() == "done"
    later = metrics.stat().st_mtime_ns + 10**9
    os.utime(r.run_dir / "best.pt", ns=(later, later))  # retrained since the evaluation
    assert not r.finished()
    saved["optim"]["lr"] = 0.1
    (r.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert not r.trained_as_planned()


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_experiments_plan_at_cpu_and_full_scale(path, tmp_path, request):
    from lungmtl.config import load_config

    extra = None
    if yaml.safe_load(path.read_text()).get("leave_one_source_out"):
        # Its folds are the sources found on disk: point it at the real data (or skip).
        extra = [f"data.sources=['{request.getfixturevalue('real_data')}']"]

    # smoke.yaml is a deliberately tiny check of the machinery, model-v2.yaml screens levers
    # for the CPU release model and calibration-sites.yaml trains its held-out-source arms in
    # 30-epoch runs: none has a full-scale form.
    cpu_only = path.stem in ("smoke", "model-v2", "calibration-sites")
    bases = [None] if cpu_only else [None, REPO / "configs" / "paper-unet.yaml"]
    for base in bases:
        exp = load_experiment(path, extra, base=base)
        runs = plan(exp, tmp_path)
        assert runs and len({r.name for r in runs}) == len(runs)
        assert {r.cfg.train.seed for r in runs} == set(exp.seeds)
        full = base is not None
        # The full-scale command really is full scale: no CPU-scale override leaks into it.
        sizes = {r.cfg.preprocess.size for r in runs}
        if full:
            assert sizes == {224}
        elif path.stem != "smoke":
            assert sizes == {load_config(exp.base).preprocess.size}
        if full:
            assert {r.cfg.train.epochs for r in runs} == {100}
