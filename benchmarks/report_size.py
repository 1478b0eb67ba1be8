"""Size of a scan's report.html and its load time in headless Chromium.

A synthetic phantom volume (150 x 512 x 512 HU by default, 0.7 mm pixels, 2 mm slices) written as
NIfTI, or a real scan (``--input``), predicted with a tiny randomly initialised U-Net (the report
embeds every slice whatever the model says; an untrained model's masks are noise, which makes
the mask PNGs larger, not smaller). Then the report is opened ``--repeat`` times in headless
Chromium through selenium, and the time to the load event and to the first slice drawn on the
viewer's canvas are read from the page's performance timing; finally the viewer steps through
every slice (arrow-key events, waiting for each slice to be drawn).

    python benchmarks/report_size.py
    python benchmarks/report_size.py --input ../shared/data/covid-ct-md/P001   # a real scan

Needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver) and selenium.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
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

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)

STEP_ALL = """
var done = arguments[arguments.length - 1], view = document.getElementById('view');
var n = Number(document.getElementById('slider').max) + 1, t0 = performance.now();
function key(k) { document.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true})); }
key('Home');
var k = 0;
(function next() {
  if (view.dataset.slice !== String(k)) { requestAnimationFrame(next); return; }
  if (k === n - 1) { done([n, performance.now() - t0]); return; }
  k += 1; key('ArrowUp'); requestAnimationFrame(next);
})();
"""


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='lungmtl-bench-')}")
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


def measure(report: Path, repeat: int) -> None:
    driver = browser()
    try:
        loads, firsts = [], []
        for _ in range(repeat):
            driver.get("about:blank")
            t = time.perf_counter()
            driver.get(report.as_uri())
            wall = time.perf_counter() - t
            for _ in range(200):
                timing = driver.execute_script(
                    "var n = performance.getEntriesByType('navigation')[0];"
                    "var m = performance.getEntriesByName('lungmtl-first-slice');"
                    "return [n.loadEventEnd, m.length ? m[0].startTime : null];"
                )
                if timing[1] is not None:
                    break
                time.sleep(0.01)
            loads.append(timing[0])
            firsts.append(timing[1])
            print(
                f"  load event {timing[0]:.0f} ms, first slice drawn {timing[1]:.0f} ms "
                f"(driver.get returned after {wall:.2f} s)"
            )
        print(
            f"median over {repeat}: load event {statistics.median(loads):.0f} ms, "
            f"first slice drawn {statistics.median(firsts):.0f} ms"
        )
        driver.set_script_timeout(120)
        n, ms = driver.execute_async_script(STEP_ALL)
        print(f"stepping through all {n} slices: {ms:.0f} ms ({ms / n:.1f} ms per slice)")
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--input", help="a real scan instead of the phantom")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="keep the outputs here (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scan = Path(args.input) if args.input else tmp / "scan.nii.gz"
        if not args.input:
            hu = make_phantom_volume(0, args.slices, args.size).hu
            affine = np.diag([-0.7, -0.7, 2.0, 1.0])
            nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)), affine), scan)
        torch.manual_seed(0)
        model = create_model("unet", width_mult=0.125, cls_hidden=[32, 16])
        run = to_dict(load_config(overrides=["preprocess.size=128"]))
        ck = save(model, tmp / "tiny.pt", run_config=run)
        out = Path(args.out) if args.out else tmp / "out"
        [r] = predict(ck, [scan], out, PredictOptions(device="cpu", gradcam=3))
        if not r.ok:
            raise SystemExit(r.message)
        report = r.out_dir / "report.html"
        text = report.read_text()
        s = r.summary
        print(
            f"{s['case']}: {s['shape_zyx']} {scan}; infected voxels {s['infected_voxels']}; "
            f"write stage {s['timing_s']['write']:.1f} s"
        )
        kinds = {
            kind: sum(map(len, re.findall(rf"data:image/{kind};base64,[A-Za-z0-9+/=]*", text)))
            for kind in ("jpeg", "png")
        }
        print(
            f"report.html {report.stat().st_size / 2**20:.2f} MiB "
            f"(CT JPEG {kinds['jpeg'] / 2**20:.2f} MiB, mask/Grad-CAM PNG "
            f"{kinds['png'] / 2**20:.2f} MiB, as base64)"
        )
        measure(report, args.repeat)


if __name__ == "__main__":
    main()
