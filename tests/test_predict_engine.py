"""The model stage: ONNX Runtime gives the eager results."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from predict_helpers import (
    make_tiny_checkpoint,
    phantom_nifti,
)

from lungmtl.cli import main
from lungmtl.errors import InputError
from lungmtl.predict import PredictOptions, predict


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck"))


@pytest.mark.slow
def test_onnx_engine_gives_the_eager_results(tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (lungmtl[export])")
    phantom_nifti(tmp_path / "scan.nii.gz", n_slices=4, size=64)
    tables = {}
    for engine in ("torch", "onnx"):
        args = ["predict", "--checkpoint", str(tiny_checkpoint), str(tmp_path / "scan.nii.gz")]
        args += ["--out", str(tmp_path / engine), "--device", "cpu", "--engine", engine]
        assert main(args) == 0, capsys.readouterr().out
        tables[engine] = pd.read_csv(tmp_path / engine / "scan" / "slices.csv")
        summary = json.loads((tmp_path / engine / "scan" / "summary.json").read_text())
        assert summary["engine"] == engine
    np.testing.assert_allclose(
        tables["onnx"]["p_infected"], tables["torch"]["p_infected"], atol=1e-4
    )
    torch_mask = np.asarray(nib.load(tmp_path / "torch" / "scan" / "mask.nii.gz").dataobj)
    onnx_mask = np.asarray(nib.load(tmp_path / "onnx" / "scan" / "mask.nii.gz").dataobj)
    assert (torch_mask != onnx_mask).mean() < 1e-3
    with pytest.raises(InputError, match="engine"):
        predict(tiny_checkpoint, [], tmp_path / "x", PredictOptions(engine="tensorrt"))
