"""The shipped model: found by name, checked by checksum, used when no checkpoint is given."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lungmtl.cli import main
from lungmtl.errors import CheckpointError
from lungmtl.models import checkpoint, create_model
from lungmtl.models.ensemble import Ensemble
from lungmtl.models.shipped import DEFAULT, SHIPPED, WEIGHTS_DIR, sha256, shipped_path


def tiny():
    return create_model("unet", width_mult=0.0625, cls_hidden=(8,)).eval()


def test_an_ensemble_round_trips_in_half_precision_and_averages_its_flips(tmp_path):
    torch.manual_seed(0)
    ens = Ensemble([tiny(), tiny()], flips=("lr",)).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = ens(x)
        # Symmetrised over left-right flips: flipping the input flips the map, keeps the class.
        flipped = ens(x.flip(-1))
        assert torch.allclose(flipped.seg, out.seg.flip(-1), atol=1e-5)
        assert torch.allclose(flipped.cls, out.cls, atol=1e-5)
        one = ens.members[0](x)
        assert not torch.allclose(out.cls, one.cls)  # the mean is not the first member
    checkpoint.save(ens, tmp_path / "e.pt", half=True, model_name="e")
    raw = torch.load(tmp_path / "e.pt", weights_only=True)
    assert raw["ensemble"] == {"members": 2, "flips": ["lr"]}
    assert all(
        v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point()
    )
    back = checkpoint.load(tmp_path / "e.pt")
    assert isinstance(back, Ensemble) and back.flips == ("lr",)
    with torch.no_grad():
        again = back(x)
    assert torch.allclose(again.cls, out.cls, atol=2e-2)
    assert torch.allclose(again.seg, out.seg, atol=5e-2)


def test_grad_cam_explains_an_ensemble_through_its_first_member():
    from lungmtl.explain import default_layer, grad_cam

    ens = Ensemble([tiny(), tiny()])
    assert default_layer(ens) is default_layer(ens.members[0])
    cam = grad_cam(ens, torch.rand(2, 1, 32, 32))
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).all()


@pytest.mark.skipif(DEFAULT is None, reason="this install ships no model")
def test_the_shipped_model_loads_by_name_with_its_checksum():
    m = SHIPPED[DEFAULT]
    path = shipped_path(DEFAULT)
    assert path.parent == WEIGHTS_DIR and sha256(path) == m.sha256
    assert path.stat().st_size <= 10 * 1024 * 1024
    restored = checkpoint.restore(DEFAULT)  # a name is resolved like a path
    ck = restored.meta
    assert ck["model_name"] == DEFAULT and "run_config" in ck and ck["scan_rule"]
    model = restored.model
    assert checkpoint.read(DEFAULT)["model_name"] == DEFAULT  # read and load take a name too
    assert type(checkpoint.load(DEFAULT)) is type(model)
    with torch.no_grad():
        out = model(torch.rand(1, 1, 128, 128))
    assert out.seg.shape == (1, 1, 128, 128) and out.cls.shape == (1, 2)


@pytest.mark.parametrize(
    ("name", "mask_rule", "kind"),
    [("covid-unet-cpu-v1", "gate", "temperature"), ("covid-unet-cpu-v2", "soft", "none")],
)
def test_each_shipped_file_carries_its_mask_rule_and_validation_calibration(name, mask_rule, kind):
    """v1 keeps its hard gate, v2 its soft rule; both carry the calibration chosen on their
    validation split (scripts/calibrate_release.py), with the scan rule on calibrated P."""
    from lungmtl.calibration import Calibration
    from lungmtl.predict import load_predictor
    from lungmtl.scan_rule import ScanRule

    if name not in SHIPPED:
        pytest.skip(f"{name} is not shipped in this install")
    predictor = load_predictor(name, "cpu")
    assert predictor.mask_rule.kind == mask_rule
    cal = predictor.calibration
    assert cal.origin == "validation" and cal.fitted["kind"] == kind
    assert set(cal.fitted["cross_validation"]) == {"none", "temperature", "platt"}
    assert cal.identity == (kind == "none")
    # The rule on calibrated P gives the verdicts of the checkpoint's rule on the model's P.
    assert cal.scan_rule == Calibration(cal.slope, cal.intercept).moved(predictor.rule)
    assert isinstance(cal.scan_rule, ScanRule) and cal.scan_rule.min_run == predictor.rule.min_run


@pytest.mark.skipif(DEFAULT is None, reason="this install ships no model")
def test_a_damaged_shipped_file_is_refused_with_the_reason(tmp_path):
    m = SHIPPED[DEFAULT]
    shutil.copy(WEIGHTS_DIR / m.file, tmp_path / m.file)
    data = bytearray((tmp_path / m.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / m.file).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        shipped_path(DEFAULT, weights_dir=tmp_path)
    (tmp_path / m.file).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        shipped_path(DEFAULT, weights_dir=tmp_path)
    with pytest.raises(CheckpointError, match="no such shipped model"):
        shipped_path("no-such-model")


@pytest.mark.slow
@pytest.mark.skipif(DEFAULT is None, reason="this install ships no model")
def test_predict_without_checkpoint_uses_the_shipped_model(tmp_path, capsys):
    from lungmtl.demo import SAMPLE

    out = tmp_path / "out"
    code = main(["predict", str(SAMPLE), "--out", str(out), "--gradcam", "0", "--threads", "2"])
    assert code == 0
    (case,) = [p for p in out.iterdir() if p.is_dir()]
    s = json.loads((case / "summary.json").read_text())
    assert s["model"] == DEFAULT and s["checkpoint"] == DEFAULT
    assert s["intended_use"].startswith("Research use only")
    assert s["rule_params"] == json.loads(json.dumps(checkpoint.read(DEFAULT)["scan_rule"]))
    assert 0.0 <= s["scan_score"] <= 1.0
    # The bundled case is a COVID-19 patient the model never trained on.
    assert s["verdict"] == "infected"
    html = (case / "report.html").read_text()
    assert DEFAULT in html and "Research use only" in html


@pytest.mark.skipif(DEFAULT is None, reason="this install ships no model")
def test_models_lists_the_shipped_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT} (default)" in out


def test_mask_gate_clears_the_maps_of_slices_called_healthy():
    from lungmtl.forward import SliceProbabilities
    from lungmtl.mask_rule import MaskRule

    pred = SliceProbabilities(
        np.array([0.2, 0.5, 0.9], np.float32), np.full((3, 4, 4), 0.8, np.float32)
    )
    gated = MaskRule.of_checkpoint({"mask_gate": 0.5}).apply(pred)
    assert gated.seg_prob[0].max() == 0 and (gated.seg_prob[1:] == 0.8).all()
    assert MaskRule.of_checkpoint({}).apply(pred) is pred
