"""The README's main job: `lungmtl demo` (shipped model on the bundled real CT sample), and
`lungmtl demo --train` on the built-in phantom."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lungmtl.cli import main
from lungmtl.models.shipped import DEFAULT


@pytest.mark.skipif(DEFAULT is None, reason="this install ships no model")
@pytest.mark.slow
def test_demo_runs_the_shipped_model_on_the_bundled_real_sample(tmp_path, capsys):
    from lungmtl.demo import SAMPLE

    assert (SAMPLE / "manifest.csv").is_file() and (SAMPLE.parent / "README.md").is_file()
    size = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert size <= 5 * 1024 * 1024
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "real CT" in out and "Zenodo" in out and "report.html" in out
    (report,) = (tmp_path / "demo").glob("*/report.html")
    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["model"] == DEFAULT and summary["n_slices"] == 17
    # The derived lung is empty on the sample's first slices while the model outlines infection
    # there: their share of lung is unknown (blank in slices.csv, named in the summary), never 0%,
    # and the scan's percent is taken over the other slices.
    table = pd.read_csv(report.parent / "slices.csv")
    blind = table[(table["lung_px"] == 0) & (table["infected_px"] > 0)]
    assert len(blind) and blind["infected_percent_of_lung"].isna().all()
    assert set(blind["z"]) <= set(summary["lung_share_unknown_slices"])
    assert any("share of lung is unknown" in w for w in summary["warnings"])
    known = table[table["infected_percent_of_lung"].notna()]
    assert (
        (known["infected_percent_of_lung"] >= 0) & (known["infected_percent_of_lung"] <= 100)
    ).all()
    assert 0 < summary["infected_percent_of_lung"] <= 100


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    assert main(["demo", "--train", "--out", str(tmp_path / "demo"), "--epochs", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "phantom" in out and "synthetic" in out  # says on screen what the data is
    assert "report.md" in out
    m = json.loads((tmp_path / "demo" / "eval" / "metrics.json").read_text())
    assert m["n_slices"] > 0 and m["n_infected"] > 0 and m["n_healthy"] > 0
    assert set(m["per_source"]) == {"phantom"}
    for name in ("report.md", "overlays.png", "roc.png", "confusion.png"):
        assert (tmp_path / "demo" / "eval" / name).exists()


def test_demo_config_keeps_paths_with_yaml_characters(tmp_path):
    from lungmtl.demo import demo_config

    out = tmp_path / "run #1: [x]"
    cfg = demo_config([str(tmp_path / "a: b")], out, 1, real=False)
    assert cfg.data.cache_dir == str(out / "cache")
    assert cfg.data.sources == [str(tmp_path / "a: b")]
