"""``lungmtl calibrate``: the model over a site's labelled data, then a site calibration fitted
to its outputs and written as a JSON file (the checkpoint is read, never written)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig, from_dict
from ..data.dataset import SliceTensors
from ..device import prepare_model, resolve_device
from ..errors import InputError
from ..evaluation.select import select_rows
from ..forward import slice_probabilities
from ..models import checkpoint
from ..models.shipped import default_checkpoint, sha256
from ..scan_rule import ScanRule
from .fit import fit_site
from .model import Calibration
from .thresholds import Target


def model_outputs(
    checkpoint_path: Path,
    ck: dict,
    model,
    *,
    data: list[str] | None,
    split: str,
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per slice of ``data`` (or of the run's ``split``): source, patient group, slice, label,
    label level and the model's own P(infected)."""
    cfg: RunConfig = from_dict(RunConfig, ck["run_config"], "checkpoint run_config")
    if ck.get("split_record") is not None and os.environ.get("LUNGMTL_DATA"):
        cfg.data.sources = [os.environ["LUNGMTL_DATA"]]
    dev = resolve_device(device)
    cache, rows = select_rows(checkpoint_path, ck, data, split, cfg, cache_dir, progress)
    tensors = SliceTensors(cache, rows)
    pred = slice_probabilities(prepare_model(model, dev), tensors.image, dev, batch_size)
    frame = cache.table.iloc[rows].reset_index(drop=True)
    return pd.DataFrame(
        {
            "source": frame["source"].astype(str),
            "patient": frame["patient"].astype(str),
            "group": frame["source"].astype(str) + "/" + frame["patient"].astype(str),
            "slice": frame["slice"] if "slice" in frame else np.nan,
            "label": frame["label"],
            "y": (frame["label"] == "infected").astype(int),
            "label_level": frame["label_level"],
            "p_model": pred.p_infected.astype(float),
        }
    )


def calibrate(
    checkpoint_path: str | Path | None,
    out: str | Path,
    *,
    data: list[str] | None = None,
    split: str = "val",
    target: Target | None = None,
    n_boot: int = 1000,
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: str | None = None,
    progress: bool = True,
    seed: int = 0,
    kind: str = "auto",
) -> Calibration:
    """Fit a site calibration for a checkpoint on labelled ``data`` (any layout lungmtl reads;
    without ``data``, the run's own ``split``) and write it to ``out`` (a .json file).

    Raises:
        InputError: ``out`` is not a .json file or is the checkpoint itself; the data hold too
            few labelled patients or slices (see :func:`lungmtl.calibration.fit.check_size`).
    """
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise InputError(out, "the calibration is written as a .json file (e.g. site.json)")
    checkpoint_path = checkpoint.resolve(
        default_checkpoint() if checkpoint_path is None else checkpoint_path
    )
    if out.resolve() == checkpoint_path.resolve():
        raise InputError(out, "would overwrite the checkpoint")
    restored = checkpoint.restore(checkpoint_path)
    ck = restored.meta
    if "run_config" not in ck:
        raise InputError(checkpoint_path, "checkpoint has no run config (not written by fit)")
    table = model_outputs(
        checkpoint_path,
        ck,
        restored.model,
        data=data,
        split=split,
        device=device,
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress,
    )
    where = ", ".join(map(str, data)) if data else f"the run's {split!r} split"
    prior = Calibration.of_checkpoint(ck)
    raw_rule = ScanRule.from_dict(ck["scan_rule"]) if ck.get("scan_rule") else ScanRule()
    base = prior.scan_rule or prior.moved(raw_rule)
    cal = fit_site(
        table,
        prior=prior,
        base_rule=base,
        target=target,
        n_boot=n_boot,
        seed=seed,
        where=where,
        kind=kind,
    )
    name = ck.get("model_name") or checkpoint_path.name
    cal = dataclasses.replace(cal, model={"name": name, "sha256": sha256(checkpoint_path)})
    out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(out)
    return Calibration.load(out)
