"""Bad input and bad options: each refused with one clear line before any work starts.

A small corpus of the awkward inputs a new user tries (issue 16): config values, command-line
options, DICOM/NIfTI oddities, too few patients, noise instead of a CT. Each case names the
file or key at fault and what is wrong, and fails before data are built or outputs written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from data_helpers import write_dicom
from PIL import Image

import lungmtl.predict
from lungmtl.cli import main
from lungmtl.config import load_config, to_dict
from lungmtl.data.build import build_dataset
from lungmtl.data.io import read_image
from lungmtl.data.phantom import make_phantom_volume, write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.errors import CheckpointError, InputError
from lungmtl.models import create_model, save
from lungmtl.predict import PredictOptions, Predictor, predict
from lungmtl.predict import inputs as predict_inputs
from lungmtl.training import fit

FAST = PredictOptions(device="cpu", gradcam=0, report=False)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    return write_phantom_dataset(root / "data", n_patients=6, n_slices=4, size=48, seed=2)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", width_mult=0.125, cls_hidden=[16])
    run = to_dict(load_config(overrides=["preprocess.size=32"]))
    return save(model, tmp_path_factory.mktemp("ck") / "tiny.pt", run_config=run)


def tiny_sets(sources, cache, **over) -> list[str]:
    sets = {
        "data.sources": f"[{', '.join(str(s) for s in sources)}]",
        "data.cache_dir": str(cache),
        "preprocess.size": "32",
        "model.width_mult": "0.125",
        "model.cls_hidden": "[16]",
        "train.batch_size": "8",
        "train.epochs": "1",
        **over,
    }
    return [f"{k}={v}" for k, v in sets.items()]


def _phantom_nifti(path: Path, n_slices: int = 4, size: int = 48, zooms=(0.8, 0.8, 3.0)) -> None:
    hu = make_phantom_volume(3, n_slices, size).hu.astype(np.float32)
    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(hu, (2, 1, 0))), None)
    img.header.set_zooms(zooms)
    nib.save(img, path)


# ---------------------------------------------------------------- config values


BAD_CONFIG = [
    ("train.batch_size=0", r"train: batch_size must be an integer >= 1, got 0"),
    ("train.batch_size=-4", r"batch_size must be an integer >= 1"),
    ("train.epochs=0", r"train: epochs must be an integer >= 1, got 0"),
    ("train.num_workers=-1", r"num_workers must be an integer >= 0"),
    ("train.max_steps_per_epoch=0", r"max_steps_per_epoch must be an integer >= 1 or null"),
    ("preprocess.size=50", r"preprocess.size 50 does not suit model 'unet'.*multiple of 16"),
    ("preprocess.size=16", r"at least 32"),
    ("data.split=[0.9,0.2,0.2]", r"data: split must be 3 non-negative .* summing to 1.*sum 1.3"),
    ("data.split=[1.2,-0.1,-0.1]", r"split must be 3 non-negative"),
    ("data.split=[.nan,0.5,0.5]", r"split must be 3 non-negative"),
    ("data.split=[1,0,0]", r"split needs train and val fractions > 0"),
    ("data.balance=0", r"balance must be a number > 0 or null"),
    ("data.max_slices=0", r"max_slices must be an integer >= 1 or null"),
    ("data.sources=[]", r"sources is empty"),
    ("optim.lr=.nan", r"optim: lr must be a finite number > 0, got nan"),
    ("optim.lr=.inf", r"lr must be a finite number > 0, got inf"),
    ("optim.lr=-0.001", r"lr must be a finite number > 0"),
    ("optim.lr=0", r"lr must be a finite number > 0"),
    ("optim.weight_decay=-1", r"weight_decay must be a finite number >= 0"),
    ("optim.lr_decay=0", r"lr_decay must lie in \(0, 1\]"),
    ("optim.lr_decay=1.5", r"lr_decay must lie in \(0, 1\]"),
    ("loss.seg_weight=-1", r"loss: seg_weight must be finite and >= 0"),
    ("loss.cls_weight=.nan", r"cls_weight must be finite and >= 0"),
    ("augment.rot90=2", r"rot90 must lie in \[0, 1\]"),
    ("augment.zoom=[1.1,0.9]", r"zoom must be \[low, high\] with 0 < low <= high"),
    ("augment.expand=0", r"expand must be an integer >= 1"),
]


@pytest.mark.parametrize(("override", "message"), BAD_CONFIG)
def test_bad_config_values_are_refused_when_the_config_is_read(override, message):
    with pytest.raises(InputError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--set", "train.batch_size=0"],
        ["train", "--set", "preprocess.size=50"],
        ["train", "--set", "data.split=[0.9,0.2,0.2]"],
        ["train", "--set", "optim.lr=.nan"],
        ["train", "--set", "train.epochs=0"],
        ["data", "build", "--set", "data.split=[0.9,0.2,0.2]"],
    ],
)
def test_bad_config_values_stop_the_cli_with_one_line(command, phantom, tmp_path, capsys):
    cache = tmp_path / "cache"
    sets = [x for s in tiny_sets([phantom], cache) for x in ("--set", s)]
    out = ["--out", str(tmp_path / "run")] if command[0] == "train" else []
    assert main([*command[:-2], *out, *sets, *command[-2:], "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lungmtl: error:") and len(err.strip().splitlines()) == 1, err
    assert not cache.exists() and not (tmp_path / "run").exists()  # nothing built or written


def test_config_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        overrides=["data.sources=[data, 'manifest:more/data', /abs/x]", "data.cache_dir=cache"]
    )
    assert cfg.data.sources == [
        str(tmp_path / "data"),
        f"manifest:{tmp_path / 'more' / 'data'}",
        "/abs/x",
    ]
    assert cfg.data.cache_dir == str(tmp_path / "cache")
    assert load_config().data.cache_dir == "~/.cache/lungmtl"  # not a working-directory path


def test_a_run_is_evaluated_from_another_folder_without_stray_caches(
    phantom, tmp_path, monkeypatch
):
    """The run config keeps its data and cache where they were: resolved, not relative."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.symlink(phantom, tmp_path / "a" / "data")
    monkeypatch.chdir(tmp_path / "a")
    fit(load_config(overrides=tiny_sets(["data"], "cache")), tmp_path / "a" / "run", progress=False)
    monkeypatch.chdir(tmp_path / "b")
    args = ["evaluate", "--checkpoint", str(tmp_path / "a" / "run"), "--split", "val"]
    code = main([*args, "--out", "ev", "-q"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ev"]


def test_a_refused_resume_leaves_the_run_as_it_was(phantom, tmp_path):
    run = tmp_path / "run"
    fit(load_config(overrides=tiny_sets([phantom], tmp_path / "c")), run, progress=False)
    before = {f: (run / f).read_bytes() for f in ("config.yaml", "split.csv")}
    other = load_config(overrides=tiny_sets([phantom], tmp_path / "c", **{"data.split_seed": 7}))
    with pytest.raises(CheckpointError, match="different config"):
        fit(other, run, resume=True, progress=False)
    assert {f: (run / f).read_bytes() for f in before} == before


# ---------------------------------------------------------------- data sets


def _one_patient(tmp_path: Path) -> Path:
    data = write_phantom_dataset(tmp_path / "one", n_patients=2, n_slices=4, size=32, seed=1)
    table = pd.read_csv(data / "manifest.csv")
    table["patient"] = "only"
    table.to_csv(data / "manifest.csv", index=False)
    return data


def test_too_few_patients_are_refused_with_what_each_split_needs_and_has(tmp_path, capsys):
    data = _one_patient(tmp_path)
    with pytest.raises(InputError, match=r"data.split.*1 patient.*train 1, val 0, test 0"):
        build_dataset([data], PreprocessConfig(size=32), cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()  # refused before any slice was pre-processed
    args = ["--set", f"data.sources=[{data}]", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert main(["train", "--out", str(tmp_path / "r"), *args, "--set", "preprocess.size=32"]) == 2
    assert "needs at least 1 patient" in capsys.readouterr().err


def _two_sources(tmp_path: Path) -> tuple[Path, Path]:
    a = write_phantom_dataset(tmp_path / "a", n_patients=3, n_slices=4, size=32, seed=3)
    b = write_phantom_dataset(tmp_path / "b", n_patients=3, n_slices=4, size=32, seed=4)
    return a, b


def test_unreadable_slices_are_named_by_their_manifest_row(tmp_path):
    a, b = _two_sources(tmp_path)
    bad = b / pd.read_csv(b / "manifest.csv")["image"].iloc[3]  # data row 4 of b's manifest
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(InputError, match=r"\(row 4\)") as e:
        build_dataset([a, b], PreprocessConfig(size=32), cache_dir=tmp_path / "c", progress=False)
    assert bad.name in str(e.value)


def test_skip_bad_skips_a_manifest_row_whose_file_is_missing(tmp_path):
    a, _ = _two_sources(tmp_path)
    gone = a / pd.read_csv(a / "manifest.csv")["image"].iloc[1]
    gone.unlink()
    with pytest.raises(InputError, match=r"row 2.*image file not found"):
        build_dataset([a], PreprocessConfig(size=32), cache_dir=tmp_path / "c", progress=False)
    ds = build_dataset(
        [a], PreprocessConfig(size=32), cache_dir=tmp_path / "c", skip_bad=True, progress=False
    )
    skipped = pd.read_csv(Path(ds.cache.root) / "skipped.csv")
    assert skipped["row"].tolist() == [2] and gone.name in skipped["file"].iloc[0]
    assert len(ds.table) == 12 - 1


# ---------------------------------------------------------------- command-line options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
        (["--batch-size", "-4"], "argument --batch-size: expected an integer >= 1"),
        (["--gradcam", "-1"], "argument --gradcam: expected an integer >= 0"),
        (["--threads", "0"], "argument --threads: expected an integer >= 1"),
        (["--batch-size", "many"], "argument --batch-size: expected an integer >= 1"),
    ],
)
def test_bad_predict_options_are_refused_at_the_command_line(options, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "x.nii", "--checkpoint", "ck.pt", "--out", str(tmp_path), *options])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--checkpoint", "ck.pt", "--out", "o", "--batch-size", "0"],
        ["demo", "--epochs", "0"],
        ["train", "--out", "o", "--devices", "0"],
        ["compare", "a", "b", "--alpha", "1.5"],
    ],
)
def test_other_bad_numbers_on_the_command_line(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(command)
    assert e.value.code == 2 and "expected" in capsys.readouterr().err


@pytest.mark.parametrize(
    "verb",
    [
        ["predict", "x.nii", "--checkpoint", "ck.pt"],
        ["evaluate", "--checkpoint", "ck.pt"],
        ["train"],
        ["shortcut", "--data", "d"],
    ],
)
def test_an_out_that_is_a_file_is_refused_up_front(verb, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert main([*verb, "--out", str(taken), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lungmtl: error:") and "--out names an existing file" in err
    assert taken.read_text() == "mine"


def test_an_out_file_that_is_a_folder_is_refused(tmp_path, capsys):
    args = ["export", "--checkpoint", "ck.pt", "--format", "onnx", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "--out names an existing folder" in capsys.readouterr().err


# ---------------------------------------------------------------- DICOM and NIfTI oddities


def _dicom(path: Path, *, z: float = 0.0, instance: int = 1, **tags) -> Path:
    """An 8x8 CT slice at (0, 0, z) of series 1.2.3; ``tags`` as in :func:`write_dicom`."""
    tags = {"ImagePositionPatient": [0.0, 0.0, z], **tags}
    pixels = np.full((8, 8), 1000, np.uint16)
    return write_dicom(
        path, pixels, z=z, series="1.2.3", instance=instance, spacing=(0.7, 0.7), **tags
    )


def _bad_dicoms(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    mr = _dicom(tmp_path / "mr.dcm", Modality="MR", RescaleSlope=None, RescaleIntercept=None)
    slope0 = _dicom(tmp_path / "slope0.dcm", RescaleSlope=0.0)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    cut = _dicom(tmp_path / "cut.dcm")
    cut.write_bytes(cut.read_bytes()[:300])
    same = tmp_path / "same"
    for i in range(3):
        _dicom(same / f"{i}.dcm", instance=1, ImagePositionPatient=None)
    cd = tmp_path / "cd"
    for i in range(2):
        _dicom(cd / "DICOM" / "ST1" / f"IM{i}", z=float(i), instance=i + 1)
    (cd / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    return {
        "MR image": (mr, "Modality MR, not CT"),
        "RescaleSlope 0": (slope0, "RescaleSlope is 0"),
        "empty file": (empty, r"empty file \(0 bytes\)"),
        "truncated header": (cut, "truncated DICOM file: it ends after 300 bytes"),
        "equal InstanceNumbers": (same, "no ImagePositionPatient and the same InstanceNumber 1"),
        "CD layout": (cd, r"CD/DVD layout with a DICOMDIR.*DICOM/ST1 \(2 files\)"),
    }


@pytest.mark.parametrize(
    "what",
    [
        "MR image",
        "RescaleSlope 0",
        "empty file",
        "truncated header",
        "equal InstanceNumbers",
        "CD layout",
    ],
)
def test_odd_dicom_is_refused_saying_what_is_wrong(what, tmp_path):
    path, message = _bad_dicoms(tmp_path)[what]
    with pytest.raises(InputError, match=message) as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_a_single_dicom_file_without_a_suffix_is_read(tmp_path):
    path = _dicom(tmp_path / "IM000123")
    data = read_image(path)
    assert data.kind == "hu" and data.array.shape == (8, 8) and float(data.array[0, 0]) == -24.0


def test_nifti_with_zero_voxel_sizes_gives_no_ml_and_says_so(tmp_path):
    _phantom_nifti(tmp_path / "zero.nii.gz", zooms=(0.0, 0.0, 0.0))
    _phantom_nifti(tmp_path / "good.nii.gz")
    assert read_image(tmp_path / "good.nii.gz").spacing_known
    assert not read_image(tmp_path / "zero.nii.gz").spacing_known
    predictor = Predictor(
        create_model("unet", width_mult=0.125, cls_hidden=[16]).eval(),
        PreprocessConfig(size=32),
        torch.device("cpu"),
    )
    inputs = [tmp_path / "zero.nii.gz", tmp_path / "good.nii.gz"]
    zero, good = predict("x", inputs, tmp_path / "out", FAST, predictor=predictor)
    assert zero.ok and zero.summary["infected_ml"] is None and zero.summary["lung_ml"] is None
    assert any("no pixel spacing" in w for w in zero.summary["warnings"])
    assert good.summary["infected_ml"] is not None


# ---------------------------------------------------------------- predict


def test_random_noise_is_not_given_a_verdict(tiny_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).save(tmp_path / "noise.png")
    np.save(tmp_path / "noise.npy", rng.uniform(-1000, 1000, (3, 64, 64)).astype(np.float32))
    _phantom_nifti(tmp_path / "scan.nii.gz")
    inputs = [tmp_path / "noise.png", tmp_path / "noise.npy", tmp_path / "scan.nii.gz"]
    args = ["predict", *map(str, inputs), "--checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--out", str(tmp_path / "out"), "--device", "cpu", "--gradcam", "0"]) == 1
    out = capsys.readouterr().out
    assert out.count("looks like random noise, not a CT image") == 2
    assert "ok     scan:" in out
    assert not (tmp_path / "out" / "noise" / "summary.json").exists()


def test_resume_skips_finished_cases_before_reading_them_and_says_so(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    for i in range(2):
        _phantom_nifti(tmp_path / f"scan{i}.nii.gz")
    args = [
        "predict",
        str(tmp_path / "scan0.nii.gz"),
        str(tmp_path / "scan1.nii.gz"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--gradcam",
        "0",
    ]
    assert main(args) == 0
    capsys.readouterr()
    (tmp_path / "out" / "scan1" / "summary.json").unlink()  # scan1 as if interrupted
    read = []
    real = predict_inputs._volume_case
    monkeypatch.setattr(
        predict_inputs, "_volume_case", lambda p, g: read.append(p.name) or real(p, g)
    )
    assert main([*args, "--resume"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert read == ["scan1.nii.gz"]  # the finished case was not read again
    assert lines[0].startswith("done   scan0:") and lines[0].endswith("(finished before)")
    assert lines[1].startswith("ok     scan1:")
    assert lines[-1].startswith("2 case(s) ok (1 finished before, not redone), 0 failed")


def test_ctrl_c_during_predict_says_which_cases_finished(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    for i in range(3):
        _phantom_nifti(tmp_path / f"scan{i}.nii.gz")
    real = lungmtl.predict.predict_case

    def stop_at_the_second(predictor, case, out_dir, opts):
        if case.name == "scan1":
            raise KeyboardInterrupt
        return real(predictor, case, out_dir, opts)

    monkeypatch.setattr(lungmtl.predict, "predict_case", stop_at_the_second)
    inputs = [str(tmp_path / f"scan{i}.nii.gz") for i in range(3)]
    args = ["predict", *inputs, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "out"), "--gradcam", "0"]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "interrupted: 1 case(s) finished before the stop: scan0" in captured.err
    assert "--resume" in captured.err
    summary = json.loads((tmp_path / "out" / "scan0" / "summary.json").read_text())
    assert summary["case"] == "scan0"
    assert not (tmp_path / "out" / "scan1" / "summary.json").exists()
