"""experiments/run.py: training and evaluating an experiment's runs, skipping and reusing
finished ones; the grid tests train tiny phantom models (slow)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from experiment_helpers import tiny_base, write_yaml

from lungmtl.config import to_dict
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.errors import InputError
from lungmtl.experiments.plan import plan, source_units
from lungmtl.experiments.run import copy_run, find_identical_run, run_experiment
from lungmtl.experiments.spec import load_experiment


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp-phantom")
    return write_phantom_dataset(root / "data", n_patients=8, n_slices=4, size=64, seed=3)


@pytest.fixture(scope="module")
def grid_run(phantom, tmp_path_factory):
    """A 2-variant x 2-seed grid, run once: multi-task vs segmentation-only (cls weight 0)."""
    tmp = tmp_path_factory.mktemp("exp-grid")
    base = tiny_base(tmp / "base.yaml", [phantom], tmp / "cache")
    spec = write_yaml(
        tmp / "exp.yaml",
        base=base,
        grid={"loss.cls_weight": [1.0, 0]},
        seeds=[0, 1],
        baseline="cls_weight1",
    )
    result = run_experiment(spec, tmp / "out", progress=False, echo=lambda s: None)
    return spec, tmp / "out", result


@pytest.mark.slow
def test_grid_writes_mean_std_and_paired_tests(grid_run):
    _, out, result = grid_run
    assert sorted(result.trained) == [
        "cls_weight0-seed0",
        "cls_weight0-seed1",
        "cls_weight1-seed0",
        "cls_weight1-seed1",
    ]
    res = pd.read_csv(out / "results.csv").set_index("variant")
    assert list(res.index) == ["cls_weight1", "cls_weight0"]
    assert (res["n_seeds"] == 2).all()
    runs = pd.read_csv(out / "runs.csv")
    # the table's mean and std are those of the per-seed rows
    for variant, part in runs.groupby("variant"):
        assert res.loc[variant, "dice_mean_mean"] == pytest.approx(part["dice_mean"].mean())
        assert res.loc[variant, "dice_mean_std"] == pytest.approx(part["dice_mean"].std(ddof=1))
    base = runs[runs["variant"] == "cls_weight1"]
    assert res.loc["cls_weight1", "accuracy_mean"] == pytest.approx(base["accuracy"].mean())
    # the segmentation-only variant has no classification result, and no correctness test
    assert pd.isna(res.loc["cls_weight0", "accuracy_mean"])
    assert pd.isna(res.loc["cls_weight0", "vs_baseline_correct_p"])
    assert 0 <= res.loc["cls_weight0", "vs_baseline_dice_p"] <= 1
    # the per-patient Dice test is reported beside the slice test (defined from 2 patients)
    per_seed = pd.read_csv(out / "paired_tests.csv")
    row = per_seed[(per_seed["variant"] == "cls_weight0") & (per_seed["seeds"] == "0")].iloc[0]
    preds = pd.read_csv(out / "runs" / "cls_weight0-seed0" / "eval" / "predictions.csv")
    assert row["n_patients_dice"] == preds.dropna(subset=["dice"])["patient"].nunique()
    p = res.loc["cls_weight0", "vs_baseline_dice_patients_p"]
    assert pd.isna(p) if row["n_patients_dice"] < 2 else 0 <= p <= 1
    # pooled over the two seeds: twice the test slices of one run
    assert res.loc["cls_weight0", "vs_baseline_n_slices"] == 2 * runs["n_slices"].iloc[0]
    assert pd.isna(res.loc["cls_weight1", "vs_baseline_dice_p"])  # the baseline itself
    md = (out / "results.md").read_text()
    for heading in ("Table 3", "Table 4", "Per source", "Tables 8 and 9"):
        assert heading in md
    assert "±" in md
    tests = pd.read_csv(out / "paired_tests.csv")
    assert set(tests["seeds"].astype(str)) == {"0", "1", "pooled"}


@pytest.mark.slow
def test_rerun_skips_finished_and_resumes_interrupted_runs(grid_run):
    spec, out, _ = grid_run
    done = out / "runs" / "cls_weight1-seed0" / "eval" / "metrics.json"
    before = done.stat().st_mtime_ns
    cut = out / "runs" / "cls_weight0-seed1"
    for f in (cut / "eval").iterdir():  # as if killed between training and evaluation
        f.unlink()
    (cut / "eval").rmdir()
    lines: list[str] = []
    again = run_experiment(spec, out, progress=False, echo=lines.append)
    assert again.trained == ["cls_weight0-seed1"]
    assert len(again.skipped) == 3
    assert any("cls_weight0-seed1: training (resuming)" in s for s in lines)
    assert done.stat().st_mtime_ns == before
    assert (cut / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_reuse_copies_identical_finished_runs_only(grid_run, tmp_path):
    spec, out, _ = grid_run
    base = yaml.safe_load(open(spec))["base"]
    # One variant equals the grid's multi-task run, one differs (another learning rate).
    other = write_yaml(
        tmp_path / "other.yaml",
        base=base,
        runs=[{"name": "same", "set": {}}, {"name": "new-lr", "set": {"optim.lr": 0.001}}],
        seeds=[0],
        baseline="same",
    )
    lines: list[str] = []
    res = run_experiment(other, tmp_path / "o", reuse=[out], progress=False, echo=lines.append)
    assert res.trained == ["new-lr-seed0"] and res.skipped == ["same-seed0"]
    assert any("same-seed0: identical to" in s and "cls_weight1-seed0" in s for s in lines)
    copied = tmp_path / "o" / "runs" / "same-seed0" / "eval" / "predictions.csv"
    original = out / "runs" / "cls_weight1-seed0" / "eval" / "predictions.csv"
    assert copied.read_bytes() == original.read_bytes()
    assert not list((tmp_path / "o" / "runs").glob(".*copying"))


@pytest.mark.slow
def test_reuse_compares_configs_as_runs_not_as_text(grid_run, tmp_path):
    """A finished run trained on another device, with another cache folder, and written before
    an option existed (its default then) is the same run: --reuse copies it."""
    spec, out, _ = grid_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cfg_file = old / "runs" / "cls_weight1-seed0" / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["train"]["device"] = "cuda:3"
    cfg["data"]["cache_dir"] = str(tmp_path / "elsewhere")
    del cfg["augment"]["flip_ud"]  # an option from after this run (default 0.0)
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    other = write_yaml(
        tmp_path / "other.yaml",
        base=yaml.safe_load(open(spec))["base"],
        runs=[{"name": "same", "set": {}}],
        seeds=[0],
    )
    lines: list[str] = []
    res = run_experiment(other, tmp_path / "o", reuse=[old], progress=False, echo=lines.append)
    assert res.trained == [] and res.skipped == ["same-seed0"]
    assert any("same-seed0: identical to" in s and "cls_weight1-seed0" in s for s in lines)


@pytest.mark.slow
def test_reuse_does_not_copy_a_run_evaluated_on_other_data(grid_run, tmp_path):
    """Same training config, but this experiment evaluates on the validation split: the grid's
    test-split evaluation must not be copied in as if it were that."""
    spec, out, _ = grid_run
    base = yaml.safe_load(open(spec))["base"]
    other = write_yaml(
        tmp_path / "val.yaml",
        base=base,
        runs=[{"name": "same", "set": {}}],
        seeds=[0],
        evaluate={"split": "val"},
    )
    lines: list[str] = []
    res = run_experiment(other, tmp_path / "v", reuse=[out], progress=False, echo=lines.append)
    assert res.trained == ["same-seed0"] and not any("identical to" in s for s in lines)
    m = yaml.safe_load(
        (tmp_path / "v" / "runs" / "same-seed0" / "eval" / "metrics.json").read_text()
    )
    assert m["data"] == "run split: val"


@pytest.mark.slow
def test_a_changed_config_is_not_taken_for_a_finished_run(grid_run, tmp_path):
    """The same experiment run again with --set: finished runs of the old config are not
    skipped (more epochs: trained on and evaluated again; another lr: refused clearly)."""
    spec, out, _ = grid_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lines: list[str] = []
    more = run_experiment(
        spec,
        copy,
        extra_set=["train.epochs=2"],
        only=["cls_weight1-seed0"],
        progress=False,
        echo=lines.append,
    )
    assert more.trained == ["cls_weight1-seed0"]
    history = pd.read_csv(copy / "runs" / "cls_weight1-seed0" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    best = copy / "runs" / "cls_weight1-seed0" / "best.pt"
    metrics = copy / "runs" / "cls_weight1-seed0" / "eval" / "metrics.json"
    assert metrics.stat().st_mtime_ns >= best.stat().st_mtime_ns
    with pytest.raises(InputError, match="different config"):
        run_experiment(
            spec,
            copy,
            extra_set=["optim.lr=0.1"],
            only=["cls_weight0-seed0"],
            progress=False,
            echo=lambda s: None,
        )


@pytest.mark.slow
def test_leave_one_source_out(tmp_path):
    alpha = write_phantom_dataset(tmp_path / "alpha", n_patients=5, n_slices=4, size=48, seed=4)
    beta = write_phantom_dataset(tmp_path / "beta", n_patients=5, n_slices=4, size=48, seed=5)
    assert source_units([str(tmp_path)]) == {"alpha": str(alpha), "beta": str(beta)}
    twin = write_phantom_dataset(tmp_path / "x" / "alpha", n_patients=2, n_slices=4, size=48)
    with pytest.raises(InputError, match="two data sources are named 'alpha'"):
        source_units([str(alpha), str(twin)])
    base = tiny_base(tmp_path / "base.yaml", [alpha, beta], tmp_path / "cache")
    spec = write_yaml(tmp_path / "l.yaml", base=base, runs=[{"name": "m", "set": {}}])
    r = run_experiment(
        spec, tmp_path / "out", leave_one_source_out=True, progress=False, echo=lambda s: None
    )
    by_name = {p.name: p for p in r.runs}
    assert set(by_name) == {"m-without-alpha-seed0", "m-without-beta-seed0"}
    assert by_name["m-without-alpha-seed0"].cfg.data.sources == [str(beta)]
    res = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(res["held_out"]) == {"alpha", "beta"}
    per_source = pd.read_csv(tmp_path / "out" / "per_source.csv")
    # each held-out evaluation covers exactly the source left out of training
    assert (per_source["held_out"] == per_source["source"]).all()
    assert "held out: alpha" in (tmp_path / "out" / "results.md").read_text()


def test_dry_run_lists_the_plan_and_trains_nothing(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    spec = write_yaml(tmp_path / "e.yaml", base=base, runs=[{"name": "m"}], seeds=[0, 1])
    lines: list[str] = []
    res = run_experiment(spec, tmp_path / "out", dry_run=True, echo=lines.append)
    assert lines == ["todo     m-seed0", "todo     m-seed1"]
    assert res.trained == [] and not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=r"--only \['x\*'\] matches no run"):
        run_experiment(spec, tmp_path / "out", only=["x*"], dry_run=True, echo=lines.append)


def test_an_identical_finished_run_is_found_and_copied_whole(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    exp = load_experiment(write_yaml(tmp_path / "e.yaml", base=base, runs=[{"name": "m"}]))
    (r,) = plan(exp, tmp_path / "new")
    old = tmp_path / "old" / "runs" / "other-name"
    (old / "eval").mkdir(parents=True)
    (old / "config.yaml").write_text(yaml.safe_dump(to_dict(r.cfg)))
    (old / "best.pt").write_bytes(b"weights")
    assert find_identical_run(r, [tmp_path / "old"]) is None  # not evaluated yet
    (old / "eval" / "metrics.json").write_text(json.dumps({"data": "run split: test"}))
    assert find_identical_run(r, [tmp_path / "nothing", tmp_path / "old"]) == old
    copy_run(old, r.run_dir)
    assert (r.run_dir / "best.pt").read_bytes() == b"weights" and r.finished()
    assert not list(r.run_dir.parent.glob(".*copying"))
