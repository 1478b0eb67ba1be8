"""The nnU-Net v2 export (lungmtl.data.nnunet): layout, dataset.json, split, refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lungmtl.data.nnunet import CASES_FILE, assign_split, export_nnunet
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.data.sources import load_slice, load_sources
from lungmtl.errors import InputError


def record_for(table: pd.DataFrame, val: list[str], test: list[str]) -> pd.DataFrame:
    """A split record as a shipped model carries it: only the held-out slices."""
    held = table[table["patient"].isin(val + test)]
    return held.assign(split=np.where(held["patient"].isin(val), "val", "test"))[
        ["source", "patient", "image", "index", "split"]
    ].astype(str)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("nn")
    data = write_phantom_dataset(root / "data", n_patients=8, n_slices=5, size=64, seed=2)
    man = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    infected = man.index[man["label"] == "infected"]
    man.loc[infected[0], "mask"] = ""  # an infected slice without a mask: not exportable
    man.to_csv(data / "manifest.csv", index=False)
    table = load_sources([data])
    patients = sorted(table["patient"].unique())
    split = assign_split(table, record_for(table, patients[:2], patients[2:4]))
    ds = export_nnunet(split, root / "out", dataset_id=7, name="Phantom")
    return root / "out" / "Dataset007_Phantom", ds, split, man


def test_the_export_follows_nnunet_v2s_raw_format(exported):
    root, ds, _split, _ = exported
    assert set(ds) >= {"channel_names", "labels", "numTraining", "file_ending"}
    assert ds["channel_names"] == {"0": "zscore"} and ds["file_ending"] == ".png"
    assert ds["labels"] == {"background": 0, "infection": 1}
    assert json.loads((root / "dataset.json").read_text()) == ds
    images = sorted((root / "imagesTr").iterdir())
    assert len(images) == ds["numTraining"] > 0
    for img in images:
        assert img.name.endswith("_0000.png")
        case = img.name[: -len("_0000.png")]
        label = np.asarray(Image.open(root / "labelsTr" / f"{case}.png"))
        pixels = np.asarray(Image.open(img))
        assert pixels.dtype == np.uint8 and pixels.ndim == 2 and label.shape == pixels.shape
        assert set(np.unique(label)) <= {0, 1}
    tests = sorted((root / "imagesTs").iterdir())
    assert tests and {p.name.replace("_0000", "") for p in tests} == {
        p.name for p in (root / "labelsTs").iterdir()
    }


def test_splits_final_holds_lungmtls_patients_and_no_patient_crosses(exported):
    root, _ds, _split, man = exported
    cases = pd.read_csv(root / CASES_FILE, dtype=str, keep_default_na=False)
    folds = json.loads((root / "splits_final.json").read_text())
    assert len(folds) == 1 and set(folds[0]) == {"train", "val"}
    tr = {p.name[: -len("_0000.png")] for p in (root / "imagesTr").iterdir()}
    assert set(folds[0]["train"]) | set(folds[0]["val"]) == tr
    assert not set(folds[0]["train"]) & set(folds[0]["val"])
    by_case = cases.set_index("case")
    groups = {k: set(by_case.loc[folds[0][k], "patient"]) for k in ("train", "val")}
    groups["test"] = set(cases.loc[cases["split"] == "test", "patient"])
    assert not groups["train"] & groups["val"] and not groups["test"] & (
        groups["train"] | groups["val"]
    )
    patients = sorted(man["patient"].unique())
    assert groups["val"] == set(patients[:2]) and groups["test"] == set(patients[2:4])
    # The infected slice without a mask was left out; every other slice was exported.
    assert len(cases) == len(man) - 1


def test_hu_slices_are_windowed_like_lungmtls_input(exported):
    root, _, _split, _ = exported
    cases = pd.read_csv(root / CASES_FILE, dtype=str, keep_default_na=False)
    row = cases.iloc[0]
    arrays = load_slice({"image": row["image"], "index": int(row["index"])})
    want = np.round(np.clip((np.clip(arrays.image, -1000, 400) + 1000) / 1400 * 255, 0, 255))
    part = "Ts" if row["split"] == "test" else "Tr"
    got = np.asarray(Image.open(root / f"images{part}" / f"{row['case']}_0000.png"))
    assert np.array_equal(got, want.astype(np.uint8))


def test_refusals(exported, tmp_path):
    root, _, split, _ = exported
    with pytest.raises(InputError, match="not empty"):
        export_nnunet(split, root.parent, dataset_id=7, name="Phantom")
    with pytest.raises(InputError, match=r"1\.\.999"):
        export_nnunet(split, tmp_path, dataset_id=1000)
    with pytest.raises(InputError, match="letters, digits"):
        export_nnunet(split, tmp_path, name="a b")
    with pytest.raises(InputError, match="unknown split"):
        export_nnunet(split.assign(split="holdout"), tmp_path)


@pytest.mark.slow
def test_the_shipped_models_split_exports_with_its_test_patients(real_data, tmp_path, capsys):
    from lungmtl.cli import main
    from lungmtl.models import checkpoint

    code = main(["data", "export", "--format", "nnunet", "--out", str(tmp_path), "--data",
                 str(real_data), "--checkpoint", "covid-unet-cpu-v2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    root = tmp_path / "Dataset501_LungMTL"
    cases = pd.read_csv(root / CASES_FILE, dtype=str, keep_default_na=False)
    record = checkpoint.split_record("covid-unet-cpu-v2")
    rec_test = set(record.loc[record["split"] == "test", "patient"])
    assert set(cases.loc[cases["split"] == "test", "patient"]) <= rec_test
    assert not set(cases.loc[cases["split"] == "train", "patient"]) & set(record["patient"])
    assert len(list((root / "imagesTs").iterdir())) == (cases["split"] == "test").sum()
