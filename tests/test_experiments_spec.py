"""experiments/spec.py: reading and checking an experiment YAML, each variant's run config."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_helpers import tiny_base, write_yaml

import lungmtl
from lungmtl.cli import main
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.errors import InputError
from lungmtl.experiments.spec import load_experiment, run_config, value_label

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp-phantom")
    return write_phantom_dataset(root / "data", n_patients=8, n_slices=4, size=64, seed=3)


def test_bad_keys_fail_clearly(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    bad = write_yaml(tmp_path / "bad.yaml", base=base, grid={"model.nmae": ["unet"]})
    with pytest.raises(InputError, match=r"unknown config key 'model.nmae'.*model\.name"):
        load_experiment(bad)
    top = write_yaml(tmp_path / "top.yaml", base=base, grid={"model.name": ["unet"]}, sedes=[1])
    with pytest.raises(InputError, match=r"unknown key\(s\) \['sedes'\].*seeds"):
        load_experiment(top)
    value = write_yaml(tmp_path / "v.yaml", base=base, grid={"model.name": ["vgg"]})
    with pytest.raises(InputError, match="vgg"):
        load_experiment(value)
    nobase = write_yaml(tmp_path / "nb.yaml", base=base, runs=[{"name": "a"}], baseline="b")
    with pytest.raises(InputError, match="baseline 'b' is not a variant"):
        load_experiment(nobase)
    assert main(["experiment", bad, "--out", str(tmp_path / "o"), "-q"]) == 2


def test_runs_take_overrides_as_a_mapping_or_key_value_strings(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    spec = write_yaml(
        tmp_path / "r.yaml",
        base=base,
        set=["train.epochs=3"],
        runs=[
            {"name": "a", "set": ["optim.lr=0.001"]},
            {"name": "b", "set": {"model.name": "unetpp"}},
        ],
        seeds=[4, 7],
    )
    exp = load_experiment(spec, extra_set=["train.batch_size=4"])
    assert [(v.name, v.overrides) for v in exp.variants] == [
        ("a", {"optim.lr": 0.001}),
        ("b", {"model.name": "unetpp"}),
    ]
    cfg = run_config(exp, exp.variants[0], 7)
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.batch_size, cfg.train.seed) == (
        0.001,
        3,
        4,
        7,
    )
    assert cfg.data.split_seed == run_config(exp, exp.variants[0], 4).data.split_seed


def test_malformed_experiments_are_refused(tmp_path, phantom):
    base = tiny_base(tmp_path / "base.yaml", [phantom], tmp_path / "cache")
    cases = {
        "exactly one of 'grid:'": {"base": base, "grid": {"model.name": ["unet"]}, "runs": []},
        "no 'base:'": {"runs": [{"name": "a"}]},
        "must use only letters": {"base": base, "runs": [{"name": "a b"}]},
        "expected key=value": {"base": base, "runs": [{"name": "a", "set": ["optim.lr"]}]},
        "seeds repeat": {"base": base, "runs": [{"name": "a"}], "seeds": [1, 1]},
        "variant names repeat": {"base": base, "runs": [{"name": "a"}, {"name": "a"}]},
        "evaluate.split must be": {
            "base": base,
            "runs": [{"name": "a"}],
            "evaluate": {"split": "x"},
        },
        "base config 'nowhere.yaml' not found": {"base": "nowhere.yaml", "runs": [{"name": "a"}]},
    }
    for i, (message, spec) in enumerate(cases.items()):
        with pytest.raises(InputError, match=message):
            load_experiment(write_yaml(tmp_path / f"e{i}.yaml", **spec))


def test_a_relative_base_is_found_in_the_installed_package(tmp_path, monkeypatch):
    """``base: configs/cpu-small.yaml`` works from any folder: lungmtl ships the configs."""
    monkeypatch.chdir(tmp_path)
    spec = write_yaml(
        tmp_path / "e.yaml", base="configs/cpu-small.yaml", runs=[{"name": "a", "set": {}}]
    )
    exp = load_experiment(spec)
    assert exp.base == Path(lungmtl.__file__).resolve().parent / "configs" / "cpu-small.yaml"


def test_grid_values_become_file_name_safe_labels():
    assert value_label(None, "model.attention") == "none"
    assert value_label(True, "train.amp") == "amp-true"
    assert value_label(0.001, "optim.lr") == "lr0.001"
    assert value_label(["median", "opening"], "preprocess.enhance") == "median+opening"
    assert value_label([], "preprocess.enhance") == "none"
    assert value_label("a/b c", "model.name") == "a_b_c"


def test_shipped_run_configs_load():
    from lungmtl.config import load_config

    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert len(paths) >= 8
    for p in paths:
        cfg = load_config(p)
        assert cfg.preprocess.size % cfg.model.divisor == 0, p
