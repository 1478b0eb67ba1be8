"""The data as an nnU-Net v2 raw dataset, on lungmtl's own patient split.

Layout (docs/data-format.md, "nnU-Net export"): every slice is a 2D case, ``imagesTr/CASE_0000.png``
(the channel suffix) and ``labelsTr/CASE.png`` (0 background, 1 infection); the test split goes to
``imagesTs``/``labelsTs``. 2D because most sources are single slices or slice subsets of
different sizes, not whole volumes, and lungmtl itself is a 2D model: both are then trained and
scored on the same slices. HU slices are windowed to 8 bits with the run's window, 8-bit slices
are written as they are; ``dataset.json`` asks for per-case z-scoring (the sources were windowed
differently). ``splits_final.json`` holds lungmtl's train/validation patients as fold 0, and
``lungmtl_cases.csv`` ties each case back to its source, patient, slice and label (what
``lungmtl evaluate --predictions`` reads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import InputError
from ..files import write_text
from .sources import load_slice
from .split import slice_keys

SPLITS = ("train", "val", "test")
CASES_FILE = "lungmtl_cases.csv"
CHANNEL = "_0000"


def assign_split(table: pd.DataFrame, record: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``split`` column from a split record (source, patient, image, index,
    split): recorded slices take their split; any other slice of a recorded patient is dropped
    (its patient is held out); the remaining patients are training patients (a shipped model's
    record lists only its held-out slices)."""
    keys = slice_keys(table)
    rec_keys = dict(zip(slice_keys(record), record["split"].astype(str), strict=True))
    split = keys.map(rec_keys)
    held_out = set((record["source"].astype(str) + "|" + record["patient"].astype(str)).tolist())
    patient = table["source"].astype(str) + "|" + table["patient"].astype(str)
    split = split.where(split.notna(), np.where(patient.isin(held_out), None, "train"))
    out = table.assign(split=split.to_numpy())
    return out[out["split"].notna()].reset_index(drop=True)


def _case_ids(table: pd.DataFrame) -> list[str]:
    ids, seen = [], set()
    for r in table.itertuples(index=False):
        stem = Path(str(r.image)).name.split(".")[0]
        base = re.sub(r"[^A-Za-z0-9-]+", "-", f"{r.patient}_{stem}")
        base += f"_{int(r.index)}" if int(r.index) >= 0 else ""
        case, k = base, 1
        while case in seen:
            case, k = f"{base}-{k}", k + 1
        seen.add(case)
        ids.append(case)
    return ids


def _to_uint8(image: np.ndarray, kind: str, window: tuple[float, float]) -> np.ndarray:
    if kind == "hu":
        lo, hi = window
        image = (np.clip(image, lo, hi) - lo) / (hi - lo) * 255.0
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def export_nnunet(
    table: pd.DataFrame,
    out: str | Path,
    *,
    dataset_id: int = 501,
    name: str = "LungMTL",
    window: tuple[float, float] = (-1000.0, 400.0),
    description: str = "",
) -> dict:
    """Write ``table`` (a slice table with a ``split`` column) as ``DatasetNNN_NAME`` under
    ``out``; returns dataset.json. Slices with an infection mask, and healthy slices whose label
    is true of the slice (an empty mask), are exported; infected slices without a mask are not
    (nnU-Net needs a label for every case).

    Raises:
        InputError: an unknown split, a bad dataset id or name, a folder that is not empty.
    """
    if not 1 <= dataset_id <= 999:
        raise InputError("--dataset-id", f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise InputError("--name", f"letters, digits, _ and - only, got {name!r}")
    bad = sorted(set(table["split"]) - set(SPLITS))
    if bad:
        raise InputError("split", f"unknown split(s) {bad}; expected {SPLITS}")
    root = Path(out) / f"Dataset{dataset_id:03d}_{name}"
    if root.exists() and any(root.iterdir()):
        raise InputError(root, "exists and is not empty: give a new --out or remove it")
    has_mask = table["mask"].fillna("").astype(str) != ""
    healthy = table["label"] == "healthy"  # every slice of a healthy scan or study is healthy
    table = table[has_mask | healthy].reset_index(drop=True)
    if table.empty:
        raise InputError("data", "no slice with an infection mask or a healthy label to export")
    table = table.assign(case=_case_ids(table))
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for r in table.to_dict("records"):
        arrays = load_slice(r)
        label = np.zeros(arrays.image.shape, np.uint8) if arrays.mask is None else arrays.mask
        part = "Ts" if r["split"] == "test" else "Tr"
        img = _to_uint8(arrays.image, arrays.kind, window)
        Image.fromarray(img).save(root / f"images{part}" / f"{r['case']}{CHANNEL}.png")
        Image.fromarray((label > 0).astype(np.uint8)).save(
            root / f"labels{part}" / f"{r['case']}.png"
        )
    train = table[table["split"] != "test"]
    dataset = {
        "channel_names": {"0": "zscore"},
        "labels": {"background": 0, "infection": 1},
        "numTraining": len(train),
        "file_ending": ".png",
        "name": name,
        "description": description
        or "COVID-19 lung infection on chest CT slices, exported by lungmtl with its patient split",
        "licence": "that of each source (see lungmtl_cases.csv and the sources' own terms)",
    }
    write_text(root / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    splits = [
        {
            "train": train.loc[train["split"] == "train", "case"].tolist(),
            "val": train.loc[train["split"] == "val", "case"].tolist(),
        }
    ]
    write_text(root / "splits_final.json", json.dumps(splits, indent=2) + "\n")
    keep = ["case", "split", "source", "patient", "image", "index", "slice", "label",
            "label_level", "mask"]  # fmt: skip
    table[[c for c in keep if c in table]].to_csv(root / CASES_FILE, index=False)
    return dataset
