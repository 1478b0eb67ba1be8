"""Eager vs torch.compile training numerics for the U-Net + CBAM (autocast, channels_last).

Trains two copies from the same initial weights on the same random batches and prints both
loss curves, whether any parameter became non-finite, and the largest weight difference between
the two copies. Usage:
    python benchmarks/compile_check.py --steps 15 --batch 32                  # CUDA, bf16
    python benchmarks/compile_check.py --device cpu --size 64 --width 0.25 --dtype fp32
    python benchmarks/compile_check.py --dtype fp32 --no-channels-last --no-fused   # bisecting
"""

from __future__ import annotations

import argparse
import copy

import torch

from lungmtl.losses import MultiTaskLoss
from lungmtl.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--fused", action=argparse.BooleanOptionalAction, default=True, help="fused Adam"
    )
    a = ap.parse_args()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    dev = torch.device(a.device)
    torch.manual_seed(0)
    # No dropout: eager and compiled draw different dropout masks, which would hide real drift.
    base = create_model("unet", attention="cbam", width_mult=a.width, dropout=0.0)
    base = base.to(dev).to(memory_format=fmt)
    g = torch.Generator().manual_seed(1)
    data = [
        (
            torch.rand(a.batch, 1, a.size, a.size, generator=g),
            (torch.rand(a.batch, 1, a.size, a.size, generator=g) > 0.9).float(),
            torch.randint(0, 2, (a.batch,), generator=g),
        )
        for _ in range(4)
    ]
    loss_fn = MultiTaskLoss()
    final = {}
    for compiled in (False, True):
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=a.fused)
        run = torch.compile(model) if compiled else model
        losses = []
        for s in range(a.steps):
            x, m, y = (t.to(dev) for t in data[s % len(data)])
            x = x.contiguous(memory_format=fmt)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
                out = run(x)
            loss = loss_fn(
                out.seg.float(),
                out.cls.float(),
                m,
                y,
                torch.ones(len(y), dtype=torch.bool, device=dev),
            ).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(round(float(loss), 4))
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        bad_buf = [
            n
            for n, b in model.named_buffers()
            if b.is_floating_point() and not torch.isfinite(b).all()
        ]
        final[compiled] = model
        print(
            {
                "compiled": compiled,
                "losses": losses,
                "nonfinite_params": bad[:5],
                "nonfinite_buffers": bad_buf[:5],
            },
            flush=True,
        )
    worst = max(
        (float((p - q).abs().max()), n)
        for (n, p), q in zip(final[False].named_parameters(), final[True].parameters(), strict=True)
    )
    print({"max_abs_weight_diff": worst[0], "parameter": worst[1]}, flush=True)


if __name__ == "__main__":
    main()
