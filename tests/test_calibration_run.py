"""`lungmtl calibrate` end to end, and what a site file changes in predict and evaluate."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from predict_helpers import FAST, make_tiny_checkpoint, phantom_nifti

from lungmtl.calibration import Calibration
from lungmtl.cli import main
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.predict import predict
from lungmtl.scan_rule import ScanRule


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck"))


def test_calibrate_writes_a_site_file_for_its_model_and_never_touches_the_checkpoint(
    tiny, tmp_path, capsys
):
    data = write_phantom_dataset(tmp_path / "site", n_patients=8, n_slices=6, size=64, seed=3)
    before = _sha(tiny)
    out = tmp_path / "site.json"
    args = ["calibrate", "-q", "--checkpoint", str(tiny), "--data", str(data), "--out", str(out)]
    code = main([*args, "--target-specificity", "0.8", "--n-boot", "20", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "operating point (slice specificity 0.8)" in text and "specificity" in text
    cal = Calibration.load(out)
    assert cal.origin == "site" and cal.model["sha256"] == before
    assert cal.fitted["n_patients"] == 8 and cal.fitted["specificity"] >= 0.8
    assert _sha(tiny) == before
    # Refusals: not a .json, the checkpoint itself, both targets, too little data.
    assert main(["calibrate", "--checkpoint", str(tiny), "--data", str(data), "--out",
                 str(tmp_path / "x.pt")]) == 2  # fmt: skip
    assert "written as a .json file" in capsys.readouterr().err
    small = write_phantom_dataset(tmp_path / "small", n_patients=2, n_slices=4, size=64, seed=4)
    assert main(["calibrate", "-q", "--checkpoint", str(tiny), "--data", str(small), "--out",
                 str(tmp_path / "s.json")]) == 2  # fmt: skip
    assert "too little labelled data to calibrate" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_a_site_file_changes_p_and_verdicts_never_the_masks(tiny, tmp_path):
    phantom_nifti(tmp_path / "scan.nii.gz")
    plain = predict(tiny, [tmp_path / "scan.nii.gz"], tmp_path / "plain", FAST)[0]
    site = Calibration(
        slope=1.0,
        intercept=6.0,  # everything now looks infected ...
        threshold=0.3,
        scan_rule=ScanRule(slice_threshold=0.4, min_run=2),
        origin="site",
        model={"name": "tiny", "sha256": _sha(tiny)},
    ).save(tmp_path / "site.json")
    opts = FAST.__class__(**{**FAST.__dict__, "calibration": str(site)})
    cal = predict(tiny, [tmp_path / "scan.nii.gz"], tmp_path / "cal", opts)[0]
    assert plain.ok and cal.ok, (plain.message, cal.message)
    a = pd.read_csv(plain.out_dir / "slices.csv")
    b = pd.read_csv(cal.out_dir / "slices.csv")
    assert np.allclose(a["p_model"], b["p_model"])
    assert (b["p_infected"] > a["p_infected"]).all() and b["positive"].all()
    assert cal.summary["verdict"] == "infected" and cal.summary["slice_threshold"] == 0.3
    assert cal.summary["calibration"]["file"] == str(site)
    assert plain.summary["calibration"]["origin"] == "model"
    m1 = nib.load(plain.out_dir / "mask.nii.gz").get_fdata()
    m2 = nib.load(cal.out_dir / "mask.nii.gz").get_fdata()
    assert np.array_equal(m1, m2)
    assert a["infected_px"].tolist() == b["infected_px"].tolist()


def test_a_site_file_for_another_model_is_refused(tiny, tmp_path, capsys):
    phantom_nifti(tmp_path / "scan.nii.gz")
    Calibration(origin="site", model={"name": "other", "sha256": "0" * 64}).save(
        tmp_path / "site.json"
    )
    code = main(
        ["predict", str(tmp_path / "scan.nii.gz"), "--checkpoint", str(tiny), "--out",
         str(tmp_path / "o"), "--calibration", str(tmp_path / "site.json")]
    )  # fmt: skip
    assert code == 2
    assert "site.json" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_reports_calibration_and_takes_a_site_file(phantom, tmp_path):
    from training_helpers import tiny_config

    from lungmtl.evaluation import evaluate
    from lungmtl.training import fit

    fit(tiny_config([phantom], tmp_path / "c", **{"train.epochs": 1}), tmp_path / "run",
        progress=False)  # fmt: skip
    plain = evaluate(tmp_path / "run", tmp_path / "plain", progress=False)
    c = plain["calibration"]
    assert c["in_use"]["origin"] == "model" and c["slice"]["n_bins"] == 10
    assert c["slice"]["ece"] == pytest.approx(c["slice_model"]["ece"])
    assert set(c["per_source"]) == set(plain["per_source"]) and c["scan"]["n"] >= 1
    assert (tmp_path / "plain" / "reliability.png").stat().st_size > 1000
    assert "## Calibration" in (tmp_path / "plain" / "report.md").read_text()
    ck = tmp_path / "run" / "best.pt"
    Calibration(
        intercept=-3.0, threshold=0.2, origin="site", model={"name": "x", "sha256": _sha(ck)}
    ).save(tmp_path / "site.json")
    site = evaluate(ck, tmp_path / "site", progress=False, calibration=tmp_path / "site.json")
    assert site["threshold"] == 0.2 and site["auc"] == pytest.approx(plain["auc"])
    assert site["calibration"]["in_use"]["file"] == str(tmp_path / "site.json")
    assert site["dice_infected_mean"] == pytest.approx(plain["dice_infected_mean"])
    rows = pd.read_csv(tmp_path / "site" / "predictions.csv")
    assert (rows["p_infected"] < rows["p_model"] + 1e-9).all()
    assert json.loads((tmp_path / "site" / "metrics.json").read_text())["threshold"] == 0.2
