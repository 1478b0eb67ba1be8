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
    # One healthy image (each image of a class folder is its own patient): too little.
    from data_helpers import png

    from lungmtl.data.phantom import make_phantom_volume

    vol = make_phantom_volume(1, 6, 64).hu
    grey = (np.clip((vol + 1000) / 1400, 0, 1) * 255).astype(np.uint8)
    png(tmp_path / "small" / "normal" / "a.png", grey[0])
    for k in (2, 3, 4):
        png(tmp_path / "small" / "covid" / f"b{k}.png", grey[k])
    small = tmp_path / "small"
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
    assert set(c["per_source"]) == set(plain["per_source"])
    # Phantom patients have 6 slices: no whole scan, and no scan probability to judge.
    assert c["scan"]["n"] == 0 and c["scan_measure"] == "scan score (not calibrated)"
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


def _dicom_scan(folder, hu: np.ndarray, patient: str) -> None:
    from data_helpers import write_dicom

    for k, plane in enumerate(hu):
        write_dicom(
            folder / f"{k:03d}.dcm",
            np.clip(plane + 1024, 0, 4000),
            z=2.0 * k,
            series=f"1.2.826.0.1.{abs(hash(patient)) % 10**8}",
            instance=k + 1,
            PatientID=patient,
            spacing=(0.8, 0.8),
        )


def test_whole_scans_labelled_healthy_or_infected_calibrate_the_scan_rule(tiny, tmp_path, capsys):
    """DICOM series labelled per scan (dicom-healthy: / dicom-infected:): no slice says which
    slices of an infected scan are infected, so P is kept, the threshold for a specificity comes
    from the healthy scans and the scan rule calls every healthy scan healthy."""
    from lungmtl.data.phantom import make_phantom_volume

    for k in range(3):
        _dicom_scan(
            tmp_path / "healthy" / f"h{k}", make_phantom_volume(k, 10, 64, False).hu, f"h{k}"
        )
    for k in range(2):
        _dicom_scan(tmp_path / "infected" / f"i{k}", make_phantom_volume(9 + k, 10, 64).hu, f"i{k}")
    out = tmp_path / "site.json"
    args = ["calibrate", "-q", "--checkpoint", str(tiny), "--out", str(out), "--device", "cpu",
            "--data", f"dicom-healthy:{tmp_path / 'healthy'}",
            "--data", f"dicom-infected:{tmp_path / 'infected'}", "--n-boot", "20"]  # fmt: skip
    assert main([*args, "--target-specificity", "0.9"]) == 0, capsys.readouterr().err
    cal = Calibration.load(out)
    assert cal.fitted["kind"] == "none" and cal.identity
    assert cal.fitted["n_scans_healthy"] == 3 and cal.fitted["n_patients"] == 5
    assert cal.fitted["specificity"] >= 0.9 and cal.fitted["ci95"]["spec"] is not None
    for k in range(3):
        r = predict(tiny, [tmp_path / "healthy" / f"h{k}"], tmp_path / f"p{k}",
                    FAST.__class__(**{**FAST.__dict__, "calibration": str(out)}))[0]  # fmt: skip
        assert r.ok and r.summary["verdict"] == "healthy", r.message
    assert main([*args, "--target-sensitivity", "0.9"]) == 2
    assert "needs at least 5 slices labelled infected" in capsys.readouterr().err


def test_resume_redoes_cases_finished_with_another_calibration(tiny, tmp_path):
    phantom_nifti(tmp_path / "scan.nii.gz")
    resume = FAST.__class__(**{**FAST.__dict__, "resume": True})
    first = predict(tiny, [tmp_path / "scan.nii.gz"], tmp_path / "o", resume)[0]
    again = predict(tiny, [tmp_path / "scan.nii.gz"], tmp_path / "o", resume)[0]
    assert first.message == "ok" and again.message == "done before"
    site = Calibration(
        intercept=2.0, origin="site", model={"name": "tiny", "sha256": _sha(tiny)}
    ).save(tmp_path / "site.json")
    with_site = FAST.__class__(**{**resume.__dict__, "calibration": str(site)})
    redone = predict(tiny, [tmp_path / "scan.nii.gz"], tmp_path / "o", with_site)[0]
    assert redone.message == "ok" and redone.summary["calibration"]["origin"] == "site"
    assert predict(tiny, [tmp_path / "scan.nii.gz"], tmp_path / "o", with_site)[0].message == (
        "done before"
    )
