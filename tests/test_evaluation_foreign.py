"""`lungmtl evaluate --predictions`: another model's masks scored on an nnU-Net export."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from test_data_nnunet import record_for

from lungmtl.cli import main
from lungmtl.data.io import read_image, write_mask_like
from lungmtl.data.nnunet import CASES_FILE, assign_split, export_nnunet
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.data.sources import load_sources
from lungmtl.errors import InputError
from lungmtl.evaluation.foreign import evaluate_predictions


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    data = write_phantom_dataset(root / "data", n_patients=8, n_slices=6, size=64, seed=5)
    table = load_sources([data])
    patients = sorted(table["patient"].unique())
    split = assign_split(table, record_for(table, patients[:2], patients[2:6]))
    export_nnunet(split, root / "out", dataset_id=9, name="Fx")
    return root / "out" / "Dataset009_Fx"


def _labels(export) -> dict[str, np.ndarray]:
    cases = pd.read_csv(export / CASES_FILE, dtype=str, keep_default_na=False)
    test = cases[cases["split"] == "test"]
    return {c: np.asarray(Image.open(export / "labelsTs" / f"{c}.png")) for c in test["case"]}


def _write(folder, masks: dict[str, np.ndarray]):
    folder.mkdir(parents=True, exist_ok=True)
    for case, m in masks.items():
        Image.fromarray(m.astype(np.uint8)).save(folder / f"{case}.png")
    return folder


def _expected_dice(pred: dict, truth: dict) -> float:
    values = []
    for c, t in truth.items():
        p, t = pred[c].astype(bool), t.astype(bool)
        total = p.sum() + t.sum()
        values.append(1.0 if total == 0 else 2 * (p & t).sum() / total)
    return float(np.mean(values))


def test_the_truth_scores_dice_1_and_eroded_or_shifted_masks_their_known_dice(export, tmp_path):
    truth = _labels(export)
    assert sum(int(t.sum()) for t in truth.values()) > 200
    m = evaluate_predictions(_write(tmp_path / "same", truth), export, tmp_path / "e0")
    assert m["dice_mean"] == pytest.approx(1.0) and m["per_volume"]["dice_mean"] == 1.0
    assert m["n_slices"] == len(truth) and m["auc"] == pytest.approx(1.0)
    eroded = {c: ndimage.binary_erosion(t > 0, iterations=1) for c, t in truth.items()}
    m = evaluate_predictions(_write(tmp_path / "ero", eroded), export, tmp_path / "e1")
    assert m["dice_mean"] == pytest.approx(_expected_dice(eroded, truth), abs=1e-9)
    assert 0.3 < m["dice_mean"] < 0.99
    shifted = {c: np.roll(t, 3, axis=1) for c, t in truth.items()}
    m = evaluate_predictions(_write(tmp_path / "sh", shifted), export, tmp_path / "e2")
    assert m["dice_mean"] == pytest.approx(_expected_dice(shifted, truth), abs=1e-9)
    rows = pd.read_csv(tmp_path / "e2" / "predictions.csv")
    assert {"source", "patient", "image", "index", "dice", "correct"} <= set(rows.columns)
    assert (tmp_path / "e2" / "report.md").read_text().startswith("# Evaluation of foreign")
    # lungmtl compare pairs two such evaluations slice by slice.
    assert main(["compare", str(tmp_path / "e0"), str(tmp_path / "e1")]) == 0


def test_a_lungmtl_predict_folder_is_read_in_the_images_orientation(export, tmp_path):
    """CASE_0000/mask.nii.gz, as `lungmtl predict imagesTs/*.png` writes it, lands on the
    export's own pixels (the truth written that way scores Dice 1)."""
    for case, t in _labels(export).items():
        ref = read_image(export / "imagesTs" / f"{case}_0000.png")
        (tmp_path / "p" / f"{case}_0000").mkdir(parents=True)
        write_mask_like(t[None], ref, tmp_path / "p" / f"{case}_0000" / "mask.nii.gz")
    m = evaluate_predictions(tmp_path / "p", export, tmp_path / "e")
    assert m["dice_mean"] == pytest.approx(1.0)


def test_missing_mis_sized_or_non_binary_predictions_are_refused(export, tmp_path, capsys):
    truth = _labels(export)
    cases = sorted(truth)
    folder = _write(tmp_path / "p", truth)
    (folder / f"{cases[0]}.png").unlink()
    with pytest.raises(InputError, match=f"no prediction for 1 of {len(cases)} test case"):
        evaluate_predictions(folder, export, tmp_path / "e")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(folder / f"{cases[0]}.png")
    with pytest.raises(InputError, match=r"shape \(10, 12\)"):
        evaluate_predictions(folder, export, tmp_path / "e")
    Image.fromarray(np.full(truth[cases[0]].shape, 2, np.uint8)).save(folder / f"{cases[0]}.png")
    with pytest.raises(InputError, match="label values"):
        evaluate_predictions(folder, export, tmp_path / "e")
    assert not (tmp_path / "e" / "metrics.json").exists()
    shutil.rmtree(folder)
    code = main(["evaluate", "--predictions", str(folder), "--truth", str(export), "--out",
                 str(tmp_path / "e")])  # fmt: skip
    assert code == 2 and "no such folder of predictions" in capsys.readouterr().err
    code = main(["evaluate", "--predictions", str(folder), "--out", str(tmp_path / "e")])
    assert code == 2 and "--truth" in capsys.readouterr().err
