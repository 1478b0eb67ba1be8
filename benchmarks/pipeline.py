"""Data-path throughput: pre-processing, cached batch loading and augmentation (slices/s).

    python benchmarks/pipeline.py [--n 64] [--workers 1 2] [--size 224]

1. Pre-processing (``preprocess_slice``: HU window, resize 512 -> size, median + opening, lung
   mask, normalisation) of synthetic 512x512 HU phantom slices, in 1..N processes.
2. Cached loading: ``SliceTensors.batch`` (index a pinned in-memory cache; what ``fit`` does per
   step) for batches of 128.
3. Augmentation: ``random_affine_matrices`` + ``apply_affine`` (joint affine, one grid_sample)
   on the CPU for batches of 128. On CUDA ``fit`` runs it on the GPU (see docs/performance.md).

Prints one line per measurement and a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from lungmtl.data.augment import apply_affine, random_affine_matrices
from lungmtl.data.build import build_dataset
from lungmtl.data.dataset import SliceTensors
from lungmtl.data.phantom import make_phantom_volume, write_phantom_dataset
from lungmtl.data.preprocess import PreprocessConfig, preprocess_slice


def _prep(args):
    img, size = args
    return preprocess_slice(img, "hu", config=PreprocessConfig(size=size)).image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="slices for the pre-processing timing")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    rows = []
    vol = make_phantom_volume(0, n_slices=a.n, size=512).hu
    for w in a.workers:
        jobs = [(s, a.size) for s in vol]
        t0 = time.perf_counter()
        if w == 1:
            for j in jobs:
                _prep(j)
        else:
            with ProcessPoolExecutor(w) as pool:
                list(pool.map(_prep, jobs, chunksize=4))
        rows.append(
            (
                f"pre-processing 512->{a.size}, {w} process(es)",
                len(jobs) / (time.perf_counter() - t0),
            )
        )
        print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        src = write_phantom_dataset(f"{tmp}/data", n_patients=8, n_slices=32, size=256, seed=0)
        ds = build_dataset(
            [src], PreprocessConfig(size=a.size), cache_dir=f"{tmp}/cache", progress=False
        )
        data = SliceTensors(ds.cache, ds.table["row"].to_numpy())
        g = torch.Generator().manual_seed(0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3:
            b = data.batch(torch.randint(0, len(data), (128,), generator=g))
            n += len(b.label)
        rows.append(
            (f"cached batch loading (batch 128, {a.size} px)", n / (time.perf_counter() - t0))
        )
        print(rows[-1], flush=True)
        x = torch.rand(128, 1, a.size, a.size)
        m = (torch.rand(128, 1, a.size, a.size) > 0.9).float()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3:
            apply_affine(x, m, random_affine_matrices(128, generator=g))
            n += 128
        rows.append(
            (f"augmentation on CPU (batch 128, {a.size} px)", n / (time.perf_counter() - t0))
        )
        print(rows[-1], flush=True)
    print(f"\nthreads {torch.get_num_threads()}\n\n| stage | slices/s |\n|---|---|")
    for name, v in rows:
        print(f"| {name} | {v:,.1f} |")


if __name__ == "__main__":
    main()
