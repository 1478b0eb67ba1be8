"""predict(): the CLI, every case reported, bad ones failed alone, shards and resume."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from predict_helpers import (
    FAST,
    bad_inputs,
    bright_predictor,
    make_tiny_checkpoint,
    phantom_nifti,
    zero_affine_nifti,
)

from lungmtl.cli import main
from lungmtl.predict import PredictOptions, predict
from lungmtl.scan_rule import longest_run


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck"))


def test_cli_predict_reports_every_case_and_fails_bad_ones(tiny_checkpoint, tmp_path, capsys):
    phantom_nifti(tmp_path / "scan.nii.gz", n_slices=5, size=64)
    photo, no_lung, broken = bad_inputs(tmp_path)
    inputs = [tmp_path / "scan.nii.gz", photo, no_lung, broken, tmp_path / "missing.nii"]
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            *map(str, inputs),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--gradcam",
            "1",
        ]
    )
    text = capsys.readouterr().out
    assert code == 1
    lines = text.strip().splitlines()
    assert lines[0].startswith("ok     scan:")
    assert "colour picture" in text and "no lungs in view" in text
    assert "cannot read NIfTI" in text and "input not found" in text
    assert lines[-1].startswith("1 case(s) ok, 4 failed")
    case = tmp_path / "out" / "scan"
    summary = json.loads((case / "summary.json").read_text())
    for key in ("verdict", "rule", "infected_ml", "infected_percent_of_lung", "timing_s"):
        assert key in summary, key
    assert set(summary["timing_s"]) >= {"read", "preprocess", "model", "postprocess", "write"}
    slices = pd.read_csv(case / "slices.csv")
    need = max(1, min(3, len(slices)))
    expect = "infected" if longest_run(slices["positive"].to_numpy()) >= need else "healthy"
    assert summary["verdict"] == expect
    html = (case / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1
    assert "http://" not in html and "https://" not in html
    # the viewer's script is inline: no <script src=...> (tests/test_predict_report.py)
    assert "<script" in html and not re.search(r"<script\b[^>]*\bsrc\s*=", html)
    assert (case / "overlays.png").exists()
    assert not (tmp_path / "out" / "holiday").exists()


def test_all_good_inputs_exit_zero(tiny_checkpoint, tmp_path, capsys):
    phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            str(tmp_path / "scan.nii.gz"),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--gradcam",
            "0",
            "--crf",
        ]
    )
    assert code == 0, capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "scan" / "summary.json").read_text())["crf"] is True


def test_shards_split_the_inputs_and_resume_skips_finished_cases(tiny_checkpoint, tmp_path):
    for i in range(3):
        phantom_nifti(tmp_path / f"scan{i}.nii.gz", n_slices=4, size=64)
    inputs = [str(tmp_path / f"scan{i}.nii.gz") for i in range(3)]
    base = [
        "predict",
        "--checkpoint",
        str(tiny_checkpoint),
        *inputs,
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--gradcam",
        "0",
        "-q",
    ]
    assert main([*base[:-1], "--shard", "0/2"]) == 0
    assert main([*base[:-1], "--shard", "1/2"]) == 0
    done = sorted(p.parent.name for p in (tmp_path / "out").glob("*/summary.json"))
    assert done == ["scan0", "scan1", "scan2"]  # two shards cover all, no case twice
    stamp = (tmp_path / "out" / "scan1" / "summary.json").stat().st_mtime_ns
    assert main([*base[:-1], "--resume"]) == 0
    assert (tmp_path / "out" / "scan1" / "summary.json").stat().st_mtime_ns == stamp
    assert main([*base[:-1], "--shard", "2/2"]) == 2


def test_library_errors_and_crashes_fail_one_case_and_the_batch_goes_on(tmp_path, monkeypatch):
    zero_affine_nifti(tmp_path / "noaxes.nii.gz")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "huge.png")
    phantom_nifti(tmp_path / "crash.nii.gz", n_slices=4, size=64)
    phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # huge.png: a "decompression bomb"
    from lungmtl.predict import outputs

    real = outputs.write_mask_like

    def disk_full(mask, ref, path):
        if ref.path.name == "crash.nii.gz":
            raise OSError(28, "No space left on device")
        return real(mask, ref, path)

    monkeypatch.setattr(outputs, "write_mask_like", disk_full)
    inputs = [tmp_path / n for n in ("noaxes.nii.gz", "huge.png", "crash.nii.gz", "scan.nii.gz")]
    lines = []
    results = predict(
        "unused", inputs, tmp_path / "out", FAST, predictor=bright_predictor(), echo=lines.append
    )
    assert [r.name for r in results] == ["noaxes", "huge", "crash", "scan"]
    assert [r.ok for r in results] == [False, False, False, True], [r.message for r in results]
    assert "noaxes.nii.gz" in results[0].message and "affine" in results[0].message
    assert "huge.png" in results[1].message and "too large" in results[1].message
    assert "crash.nii.gz" in results[2].message and "No space left" in results[2].message
    assert lines[2].startswith("FAILED crash:") and len(lines) == 4
    assert not (tmp_path / "out" / "crash" / "summary.json").exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_mask_like", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict("unused", inputs[3:], tmp_path / "out2", FAST, predictor=bright_predictor())


def test_resume_redoes_a_case_whose_summary_is_for_another_input(tmp_path):
    for p in ("a", "b"):
        (tmp_path / p).mkdir()
        phantom_nifti(tmp_path / p / "scan.nii.gz", n_slices=4, size=64)
    out = tmp_path / "out"
    predict("unused", [tmp_path / "a" / "scan.nii.gz"], out, FAST, predictor=bright_predictor())
    resume = PredictOptions(device="cpu", gradcam=0, report=False, resume=True)
    [r] = predict(
        "unused", [tmp_path / "b" / "scan.nii.gz"], out, resume, predictor=bright_predictor()
    )
    assert r.ok and r.message != "done before"
    summary = json.loads((out / "scan" / "summary.json").read_text())
    assert summary["input"]["path"] == str((tmp_path / "b" / "scan.nii.gz").absolute())
    # The same input again: now it is done.
    [r] = predict(
        "unused", [tmp_path / "b" / "scan.nii.gz"], out, resume, predictor=bright_predictor()
    )
    assert r.message == "done before"
