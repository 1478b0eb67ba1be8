"""CPU inference of the paper U-Net four ways, as a share of this machine's measured matmul peak.

Eager fp32 (NCHW), eager channels_last, torch.compile (inductor, with a fallback message when
it fails), and ONNX Runtime on the file ``lungmtl export`` writes; every variant is checked
against eager (max |difference| of the logits) before it is timed.

Usage: python benchmarks/cpu_inference.py [--size 224] [--batch 8] [--reps 3] [--json PATH]
Run it alone on the machine: a second busy process halves every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import matmul_peak

from lungmtl.export import export, onnx_session, run_exported
from lungmtl.models import create_model, save


def timed(fn, reps: int) -> float:
    fn()  # warm-up (and compilation)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attention", default="cbam")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak(torch.device("cpu"))
    attention = None if a.attention == "none" else a.attention
    model = create_model("unet", attention=attention).eval()
    x = torch.rand(a.batch, 1, a.size, a.size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x[:1])
    gflop = fc.get_total_flops() / 1e9
    with torch.no_grad():
        ref = model(x)
    rows = []

    def record(name, fn, out=None, error=None):
        if error is not None:
            rows.append({"variant": name, "error": error})
            print(f"{name}: {error}", flush=True)
            return
        seg, cls = out
        diff = float(max((seg - ref.seg).abs().max(), (cls - ref.cls).abs().max()))
        with torch.no_grad():
            s = timed(fn, a.reps)
        ips = a.batch / s
        r = {
            "variant": name,
            "ms_per_image": 1000 * s / a.batch,
            "images_per_s": ips,
            "gflop_s": ips * gflop,
            "percent_of_peak": 100 * ips * gflop / peak,
            "max_abs_diff": diff,
        }
        rows.append(r)
        print(json.dumps(r), flush=True)

    with torch.no_grad():
        record("eager fp32", lambda: model(x), (ref.seg, ref.cls))
        cl = create_model("unet", attention=attention).eval()
        cl.load_state_dict(model.state_dict())
        cl = cl.to(memory_format=torch.channels_last)
        xc = x.to(memory_format=torch.channels_last)
        record("eager channels_last", lambda: cl(xc), tuple(cl(xc)))
        try:
            comp = torch.compile(model)
            out = comp(x)
            record("torch.compile (inductor)", lambda: comp(x), (out.seg, out.cls))
        except Exception as e:  # no C++ compiler, unsupported op...: eager is the fallback
            record("torch.compile (inductor)", None, error=f"{type(e).__name__}: {e}"[:200])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ck = save(model, Path(tmp) / "m.pt", run_config={"preprocess": {"size": a.size}})
            onnx_path = export(ck, Path(tmp) / "m.onnx")
            xn = x.numpy()
            import onnxruntime as ort

            sess = onnx_session(onnx_path)
            seg, cls = sess.run(["seg", "cls"], {"image": xn})
            assert np.allclose(seg, run_exported(onnx_path, xn)[0])
            record(
                f"ONNX Runtime {ort.__version__}",
                lambda: sess.run(["seg", "cls"], {"image": xn}),
                (torch.from_numpy(seg), torch.from_numpy(cls)),
            )
    except Exception as e:
        record("ONNX Runtime", None, error=f"{type(e).__name__}: {e}"[:200])

    info = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_peak_gflop_s": peak,
        "gflop_per_image": gflop,
        "size": a.size,
        "batch": a.batch,
        "attention": a.attention,
    }
    print(
        f"\nU-Net ({a.attention}) {a.size}x{a.size}, batch {a.batch}, {info['threads']} threads, "
        f"{gflop:.1f} GFLOP/image; fp32 matmul peak {peak:.1f} GFLOP/s\n"
    )
    print("| variant | ms/image | images/s | GFLOP/s | % of peak | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | error: {r['error'][:80]} | | | | |")
        else:
            print(
                f"| {r['variant']} | {r['ms_per_image']:.0f} | {r['images_per_s']:.2f} "
                f"| {r['gflop_s']:.1f} | {r['percent_of_peak']:.0f}% | {r['max_abs_diff']:.1e} |"
            )
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
