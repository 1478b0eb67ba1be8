"""ONNX / TorchScript export: outputs match PyTorch; the CLI verb."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungmtl.cli import main
from lungmtl.config import load_config, to_dict
from lungmtl.errors import InputError
from lungmtl.export import export, run_exported, verify
from lungmtl.models import checkpoint, create_model, save


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", width_mult=0.125, cls_hidden=[32, 16])
    run = to_dict(load_config(overrides=["preprocess.size=32"]))
    return save(model, tmp_path_factory.mktemp("ck") / "tiny.pt", run_config=run)


@pytest.mark.slow
def test_onnx_matches_pytorch_with_any_batch_size(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")
    path = export(tiny_checkpoint, tmp_path / "model.onnx", "onnx")
    x = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    seg, cls = run_exported(path, x)
    with torch.no_grad():
        ref = checkpoint.load(tiny_checkpoint)(torch.from_numpy(x))
    np.testing.assert_allclose(seg, ref.seg.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(cls, ref.cls.numpy(), atol=1e-4, rtol=1e-4)
    assert verify(tiny_checkpoint, path) < 1e-4


def test_torchscript_matches_pytorch(tiny_checkpoint, tmp_path):
    path = export(tiny_checkpoint, tmp_path / "model.pt", "torchscript")
    assert verify(tiny_checkpoint, path, n=1) < 1e-5


@pytest.mark.slow
def test_cli_export_and_bad_format(tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")
    out = tmp_path / "m.onnx"
    code = main(
        ["export", "--checkpoint", str(tiny_checkpoint), "--format", "onnx", "--out", str(out)]
    )
    assert code == 0 and out.exists()
    assert "max |difference|" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(tiny_checkpoint), "--format", "tflite", "--out", "x"])


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_a_corrupt_exported_file_is_named_in_the_error(tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(b"half a model")
    with pytest.raises(InputError, match=rf"{name}: not a loadable"):
        run_exported(bad, np.zeros((1, 1, 64, 64), np.float32))
