"""Time a whole-scan prediction by stage (read, preprocess, model, postprocess, write).

A synthetic phantom volume (150 x 512 x 512 HU by default) written as NIfTI, predicted by a
shipped model (``--checkpoint NAME``) or by a randomly initialised paper-size U-Net
(64-128-256-512, CBAM): timing only, the predictions on a phantom mean nothing.

    python benchmarks/scan.py --checkpoint covid-unet-cpu   # the shipped model, end to end
    python benchmarks/scan.py                     # CPU, paper size, Grad-CAM on 3 slices
    python benchmarks/scan.py --device cuda --crf
    python benchmarks/scan.py --threads 1 --slices 40 --width-mult 0.25
    python benchmarks/scan.py --engine onnx      # the model stage through ONNX Runtime

Prints the per-stage seconds, the RSS after each stage and the process's peak RSS (MB).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lungmtl.config import load_config, to_dict
from lungmtl.data.phantom import make_phantom_volume
from lungmtl.models import create_model, save
from lungmtl.predict import PredictOptions, predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model-size", type=int, default=224, help="preprocess.size")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--gradcam", type=int, default=3)
    ap.add_argument("--crf", action="store_true")
    ap.add_argument("--engine", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--out", help="keep the outputs here (default: a temporary folder)")
    ap.add_argument("--checkpoint", help="a shipped model name, run or .pt instead of a random net")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        hu = make_phantom_volume(0, args.slices, args.size).hu
        affine = np.diag([-0.7, -0.7, 2.0, 1.0])  # 0.7 mm pixels, 2 mm slices
        nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)), affine), tmp / "scan.nii.gz")
        print(f"phantom {hu.shape} written in {time.perf_counter() - t:.1f} s (not timed below)")
        if args.checkpoint:
            ck = args.checkpoint
        else:
            torch.manual_seed(0)
            model = create_model("unet", width_mult=args.width_mult)
            run = to_dict(load_config(overrides=[f"preprocess.size={args.model_size}"]))
            ck = save(model, tmp / "model.pt", run_config=run)
        opts = PredictOptions(
            device=args.device,
            batch_size=args.batch_size,
            threads=args.threads,
            gradcam=args.gradcam,
            crf=args.crf,
            engine=args.engine,
        )
        out = Path(args.out) if args.out else tmp / "out"
        t = time.perf_counter()
        [r] = predict(ck, [tmp / "scan.nii.gz"], out, opts)
        wall = time.perf_counter() - t
    if not r.ok:
        raise SystemExit(r.message)
    s = r.summary
    print(
        f"device={s['device']} threads={torch.get_num_threads()} batch={args.batch_size} "
        f"model={args.checkpoint or 'random unet'} width_mult={args.width_mult} crf={args.crf} "
        f"gradcam={args.gradcam} engine={args.engine}"
    )
    print(json.dumps({"timing_s": s["timing_s"], "rss_mb_after": s["rss_mb_after"]}, indent=1))
    print(f"peak RSS {s['peak_rss_mb']:.0f} MB; wall (incl. model load) {wall:.1f} s")
    total = s["timing_s"]["total"]
    print(f"network share: {s['timing_s']['model'] / total:.0%} of {total:.1f} s (model stage)")
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
