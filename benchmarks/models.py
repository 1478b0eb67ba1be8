"""Parameter counts, FLOPs and forward time per image for the six paper configurations.

Usage: python benchmarks/models.py [--size 224] [--batch 8] [--reps 3] [--device cpu]
Prints a Markdown table; writes JSON with --json PATH.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from lungmtl.device import autocast, prepare_input, prepare_model, resolve_device
from lungmtl.models import MODELS, count_parameters, create_model


def matmul_peak(
    dev: torch.device, n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """GFLOP/s of a large square matrix product in ``dtype``: the ceiling convolutions are
    judged by (fp32 on the CPU; bf16 with n = 8192 for a GPU's tensor cores)."""
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    peak = matmul_peak(dev)
    print(f"measured fp32 matmul peak on {dev}: {peak:.1f} GFLOP/s", flush=True)
    rows = []
    for name in sorted(n for n, e in MODELS.items() if not e.external):
        for attention in ("cbam", None):
            model = prepare_model(create_model(name, attention=attention), dev).eval()
            x = prepare_input(torch.randn(a.batch, 1, a.size, a.size), dev)
            with torch.no_grad(), autocast(dev):
                with FlopCounterMode(display=False) as fc:
                    model(x[:1])
                model(x)  # warm-up
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(a.reps):
                    model(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                dt = (time.perf_counter() - t0) / a.reps
            rows.append(
                {
                    "model": name,
                    "attention": attention or "none",
                    "params": count_parameters(model),
                    "gflop_per_image": fc.get_total_flops() / 1e9,
                    "ms_per_image": 1000 * dt / a.batch,
                    "achieved_gflops": fc.get_total_flops() * a.batch / dt / 1e9,
                }
            )
            print(rows[-1], flush=True)
    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {dev}, {a.size}x{a.size}, batch {a.batch}\n"
    )
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s\n")
    print("| model | attention | parameters | GFLOP/image | ms/image | achieved GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['attention']} | {r['params']:,} | {r['gflop_per_image']:.1f} "
            f"| {r['ms_per_image']:.1f} | {r['achieved_gflops']:.1f} "
            f"({100 * r['achieved_gflops'] / peak:.0f}% of peak) |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
