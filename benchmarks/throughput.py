"""Training and inference throughput of every backbone x attention, by execution mode.

For each model and mode it measures training images/s (forward + multi-task loss + backward +
Adam step, with the on-device augmentation that ``fit`` uses), inference images/s, peak device
memory, and achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode on one step: a
multiply-add counts 2). Modes: fp32 / bf16 autocast, channels_last on/off, eager / torch.compile.
With segmentation_models_pytorch importable, its Unet with an auxiliary classification head runs
through the same step at the same input as a side-by-side reference.

The same run measures the device's matrix-product ceiling (bf16 8192^3 on CUDA, fp32 2048^3 on
the CPU) and reports every row as a share of it.

Usage:
    python benchmarks/throughput.py --device cuda --out OUT_DIR            # full grid
    python benchmarks/throughput.py --device cpu --batch 4 --steps 2 --warmup 1   # 224 px CPU grid
    python benchmarks/throughput.py --device cpu --size 64 --width-mult 0.125 --batch 4 --steps 2

Writes OUT_DIR/throughput.json and OUT_DIR/throughput.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from models import matmul_peak  # benchmarks/models.py
from torch.utils.flop_counter import FlopCounterMode

from lungmtl.data.augment import apply_affine, random_affine_matrices
from lungmtl.losses import MultiTaskLoss
from lungmtl.models import MODELS, count_parameters, create_model

MODES = {  # name: (bf16, channels_last, compile)
    "fp32": (False, False, False),
    "fp32+cl": (False, True, False),
    "fp32+compile": (False, False, True),
    "bf16": (True, False, False),
    "bf16+cl": (True, True, False),
    "bf16+cl+compile": (True, True, True),
}
DEFAULT_MODES = {  # CUDA: bf16 is the fast path; CPU (AVX2, no AMX): fp32 is
    "cuda": ["fp32", "bf16", "bf16+cl", "bf16+cl+compile"],
    "cpu": ["fp32", "fp32+cl", "fp32+compile", "bf16"],
}


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(model, dev, mode, batch, size, steps, warmup) -> dict:
    bf16, cl, compiled = MODES[mode]
    model = model.to(dev)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=dev.type == "cuda")
    loss_fn = MultiTaskLoss()
    run = torch.compile(model) if compiled else model
    g = torch.Generator(device="cpu").manual_seed(0)
    x0 = torch.rand(batch, 1, size, size, generator=g).to(dev)
    m0 = (torch.rand(batch, 1, size, size, generator=g) > 0.9).float().to(dev)
    label = torch.randint(0, 2, (batch,), generator=g).to(dev)
    has_mask = torch.ones(batch, dtype=torch.bool, device=dev)
    ctx = (
        (lambda: torch.autocast(dev.type, dtype=torch.bfloat16))
        if bf16
        else (lambda: torch.autocast(dev.type, enabled=False))
    )

    def train_step():
        x, m = apply_affine(x0, m0, random_affine_matrices(batch, device=dev))
        x = x.contiguous(memory_format=fmt)
        with ctx():
            out = run(x)
        loss = loss_fn(out.seg.float(), out.cls.float(), m, label, has_mask).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    with FlopCounterMode(display=False) as fc:
        with ctx():
            out = model(x0.contiguous(memory_format=fmt))
        loss_fn(out.seg.float(), out.cls.float(), m0, label, has_mask).total.backward()
    train_flops = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_compile = time.perf_counter()
    for _ in range(warmup):
        train_step()
    sync(dev)
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync(dev)
    dt_train = (time.perf_counter() - t0) / steps
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None

    model.eval()
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            with ctx():
                model(x0.contiguous(memory_format=fmt))
        infer_flops = fc.get_total_flops()
        for _ in range(warmup):
            with ctx():
                run(x0.contiguous(memory_format=fmt))
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            with ctx():
                run(x0.contiguous(memory_format=fmt))
        sync(dev)
        dt_inf = (time.perf_counter() - t0) / steps
    return {
        "mode": mode,
        "batch": batch,
        "train_img_s": batch / dt_train,
        "infer_img_s": batch / dt_inf,
        "train_tflops": train_flops / dt_train / 1e12,
        "infer_tflops": infer_flops / dt_inf / 1e12,
        "gflop_per_img_fwd": infer_flops / batch / 1e9,
        "gflop_per_img_train": train_flops / batch / 1e9,
        "peak_mem_gib": peak_train,
        "warmup_s": t_compile,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=None, help="default 128 on CUDA, 8 on CPU")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--modes", default=None, help=f"comma list of {', '.join(MODES)}; default {DEFAULT_MODES}"
    )
    ap.add_argument(
        "--compile-models",
        default="unet-cbam",
        help="models measured with torch.compile (compiling all six is slow)",
    )
    ap.add_argument(
        "--models",
        default=None,
        help="comma list of models (e.g. unetpp-none,smp-unet-resnet34-aux); default all",
    )
    ap.add_argument("--out", default="benchmark-results")
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    batch = a.batch or (128 if cuda else 8)
    steps = a.steps or (20 if cuda else 3)
    modes = a.modes.split(",") if a.modes else DEFAULT_MODES[dev.type]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    peak_dtype = torch.bfloat16 if cuda else torch.float32
    peak_tflops = matmul_peak(dev, n=8192 if cuda else 2048, dtype=peak_dtype) / 1e3
    print(f"measured {str(peak_dtype)[6:]} matmul peak: {peak_tflops:.3f} TFLOP/s", flush=True)
    compile_models = set(a.compile_models.split(","))
    own = sorted(n for n, e in MODELS.items() if not e.external)
    models = [(n, att) for n in own for att in ("cbam", None)]
    smp_name = "smp-unet-resnet34-aux"
    wanted = set(a.models.split(",")) if a.models else None
    if wanted is not None:
        known = {f"{n}-{att or 'none'}" for n, att in models} | {smp_name}
        if wanted - known:
            ap.error(f"unknown model(s) {sorted(wanted - known)}; choose from {sorted(known)}")
        models = [(n, att) for n, att in models if f"{n}-{att or 'none'}" in wanted]
    rows = []

    def record(name, build, mode_list):
        for mode in mode_list:
            torch.manual_seed(0)
            try:
                model = build()
                r = measure(model, dev, mode, batch, a.size, steps, a.warmup)
                r.update(model=name, params=count_parameters(model))
            except Exception as e:  # one failing mode (e.g. compile) must not sink the table
                r = {"model": name, "mode": mode, "error": f"{type(e).__name__}: {e}"[:300]}
            rows.append(r)
            print(json.dumps(r), flush=True)
            del model
            if cuda:
                torch.cuda.empty_cache()

    for n, att in models:
        key = f"{n}-{att or 'none'}"
        ms = [m for m in modes if not MODES[m][2] or key in compile_models]
        record(
            key, lambda n=n, att=att: create_model(n, attention=att, width_mult=a.width_mult), ms
        )
    if wanted is None or smp_name in wanted:
        try:
            create_model("smp-unet", attention=None)  # lungmtl.models.external: Unet + aux head
            record(
                smp_name,
                lambda: create_model("smp-unet", attention=None),
                [m for m in modes if not MODES[m][2]],
            )
        except ImportError as e:
            rows.append({"model": smp_name, "error": f"not installed: {e}"})

    info = {
        "device": torch.cuda.get_device_name(dev) if cuda else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": a.size,
        "batch": batch,
        "steps": steps,
        "width_mult": a.width_mult,
        "matmul_peak_tflops": peak_tflops,
        "matmul_peak_dtype": str(peak_dtype)[6:],
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    lines = [
        f"Device: {info['device']}; torch {info['torch']}; {a.size}x{a.size}, batch {batch}, "
        f"width x{a.width_mult}, {steps} timed steps after {a.warmup} warm-up; "
        f"{info['threads']} threads; measured {info['matmul_peak_dtype']} matmul peak "
        f"{peak_tflops:.3f} TFLOP/s.",
        "",
        "| model | mode | params | GFLOP/img fwd | train img/s | train TFLOP/s | % of peak "
        "| infer img/s | infer TFLOP/s | % of peak | peak GiB | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('mode', '')} | error: {r['error'][:80]} |")
            continue
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['params']:,} | {r['gflop_per_img_fwd']:.1f} "
            f"| {r['train_img_s']:.2f} | {r['train_tflops']:.3f} "
            f"| {100 * r['train_tflops'] / peak_tflops:.0f}% "
            f"| {r['infer_img_s']:.2f} | {r['infer_tflops']:.3f} "
            f"| {100 * r['infer_tflops'] / peak_tflops:.0f}% | {mem} | {r['warmup_s']:.0f} |"
        )
    text = "\n".join(lines)
    (out / "throughput.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
