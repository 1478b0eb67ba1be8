"""Stand-in models, phantom inputs and a tiny checkpoint shared by the tests of lungmtl.predict."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from lungmtl.config import load_config, to_dict
from lungmtl.data.phantom import make_phantom_volume
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.models import MultiTaskOutput, create_model, save
from lungmtl.predict import PredictOptions, Predictor

FAST = PredictOptions(device="cpu", gradcam=0, report=False)


def make_tiny_checkpoint(folder: Path) -> Path:
    """An untrained width-0.125 U-Net at 64 px with its run config."""
    torch.manual_seed(0)
    model = create_model("unet", width_mult=0.125, cls_hidden=[32, 16])
    run = to_dict(load_config(overrides=["preprocess.size=64"]))
    return save(model, folder / "tiny.pt", run_config=run)


class BrightIsInfected(nn.Module):
    """A stand-in model whose "infection" is every bright pixel (tissue, bone) of its input.

    Its mask is a known function of the image, so where the mask lands in the written file
    tells whether the geometry was kept.
    """

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        seg = 40.0 * (x - 0.4)
        score = 40.0 * (x.mean(dim=(1, 2, 3)) - 0.3)
        return MultiTaskOutput(seg, torch.stack([-score, score], dim=1))


def bright_predictor(size: int = 64) -> Predictor:
    return Predictor(BrightIsInfected(), PreprocessConfig(size=size), torch.device("cpu"), "fake")


def phantom_nifti(path, n_slices=8, size=96):
    """A phantom stored in a non-canonical voxel order (x, y, z with flips), with a bright marker
    in one corner so that any flip of the mask would be visible."""
    hu = make_phantom_volume(3, n_slices, size).hu.copy()  # (z, rows=A->P, cols=R->L)
    # A bright block in the air outside the body, superior, anterior, patient right: any flip of
    # the mask moves it to where the image is air.
    hu[-3:, 2:10, 2:14] = 300.0
    stored = np.ascontiguousarray(np.transpose(hu, (2, 1, 0))[::-1])  # (x: L->R, y: A->P, z: I->S)
    affine = np.array(
        [[1.2, 0, 0, -60.0], [0, -1.1, 0, 50.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]], dtype=float
    )
    nib.save(nib.Nifti1Image(stored, affine), path)
    return stored, affine


def bad_inputs(tmp_path):
    photo = tmp_path / "holiday.png"
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 220, 30  # saturated colour: no CT looks like this
    Image.fromarray(rgb).save(photo)
    no_lung = tmp_path / "abdomen.npy"
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) / 26) ** 2 + ((xx - 32) / 30) ** 2 < 1
    np.save(no_lung, np.where(body, 40.0, -1000.0)[None].repeat(3, 0).astype(np.float32))
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    return photo, no_lung, broken


def rewrite_manifest(data, patient_rows):
    """Rewrite ``data/manifest.csv`` through ``patient_rows(table) -> table``."""
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    patient_rows(table).to_csv(data / "manifest.csv", index=False)


def expected_stack(data, patient, n):
    return np.stack([np.load(data / "images" / f"{patient}_z{k:03d}.npy") for k in range(n)])


def zero_affine_nifti(path):
    img = nib.Nifti1Image(np.full((8, 8, 3), -1000.0, np.float32), np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.zeros((4, 4)), code=1)
    nib.save(nib.Nifti1Image(img.dataobj, None, img.header), path)
