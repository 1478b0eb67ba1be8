"""Peak memory and time of `lungmtl predict` on a long series and on a whole study, measured
with /usr/bin/time -v around the CLI as a user runs it (report, seg.dcm and all).

Built from covid-ct-md P001 (148 JPEG-lossless slices, compressed pixels copied as they are):
- a 600-slice series: P001's slices repeated along z with new positions and UIDs;
- a 5-series study: P001 as five reconstructions (different kernels and slice thicknesses in
  the headers) plus a dose SR and a screenshot, all in one zip (--series all: 5 cases).

    python benchmarks/study_memory.py ../shared/data/covid-ct-md/P001 --out runs/bench-study

Takes ~10 minutes on 2 CPU cores; run with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from study_helpers import dose_report, secondary_capture, write

KERNELS = [("B31f", 2.0), ("B70f", 2.0), ("B45f", 3.0), ("I70f", 1.0), ("D40s", 5.0)]


def _series(source: list[pydicom.Dataset], n: int, number: int, kernel: str, thick: float):
    """``n`` slices from ``source`` repeated along z as one new series."""
    series = generate_uid()
    step = 2.0
    base = [float(v) for v in source[0].ImagePositionPatient]
    out = []
    for k in range(n):
        ds = copy.deepcopy(source[k % len(source)])
        ds.SeriesInstanceUID, ds.SeriesNumber = series, number
        ds.SeriesDescription = f"Thorax {thick:g} {kernel}"
        ds.ConvolutionKernel, ds.SliceThickness = kernel, thick
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [base[0], base[1], base[2] + k * step]
        ds.InstanceNumber = k + 1
        out.append(ds)
    return out


def _measure(cmd: list[str], log: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    log.write_text(proc.stdout + proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {
        "command": " ".join(cmd),
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(int(rss.group(1)) / 2**20, 2) if rss else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("series", type=Path, help="a DICOM series folder (covid-ct-md P001)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    source = [pydicom.dcmread(f) for f in sorted(args.series.iterdir())]
    source.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    work = args.out / "inputs"
    shutil.rmtree(work, ignore_errors=True)
    long_series = write(work / "long", _series(source, args.slices, 2, "B31f", 2.0))
    study = work / "study"
    for number, (kernel, thick) in enumerate(KERNELS, start=2):
        write(study / f"SE{number}", _series(source, len(source), number, kernel, thick))
    write(study / "SE900", [dose_report(source[0]), secondary_capture(source[0])])
    archive = Path(shutil.make_archive(str(work / "study"), "zip", study))
    shutil.rmtree(study)
    exe = [str(Path(sys.executable).parent / "lungmtl"), "predict", "--threads", str(args.threads)]
    results = {}
    for name, inp in (("600-slice series", long_series), ("5-series study (zip)", archive)):
        out = args.out / name.split(" ")[0]
        shutil.rmtree(out, ignore_errors=True)
        results[name] = _measure([*exe, str(inp), "--out", str(out)], args.out / f"{name[:3]}.log")
        done = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
        results[name]["cases"] = len(done)
        results[name]["slices"] = sum(s["n_slices"] for s in done)
        print(name, results[name], flush=True)
    (args.out / "study_memory.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
