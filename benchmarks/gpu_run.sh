#!/usr/bin/env bash
# One prepared GPU session. Run from the repository root on a CUDA machine; results go to
# ${OUT:-gpu-results}. STEPS picks what runs, in order (a lent machine has ~10 minutes of
# compute): bisect (why the compiled step gave NaN weights), missing (the grid rows the first
# session's time limit cut), fit (the real training loop), grid (the full throughput grid),
# demo (the README's main job). Default: "bisect missing fit".
# Wheels for packages missing on the machine (pydantic, pooch, monai, nibabel, pydicom, smp) may
# sit in .whl/.
set -uo pipefail
OUT=${OUT:-gpu-results}
STEPS=${STEPS:-bisect missing fit}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

bisect() {  # the compiled step's NaN weights (torch 2.11 + H100): bf16 vs fp32, then bf16 without
  #          channels_last and without fused Adam. On the CPU every variant is finite.
  for flags in "--dtype bf16" "--dtype fp32" "--dtype bf16 --no-channels-last" "--dtype bf16 --no-fused"; do
    echo "compile_check $flags" | tee -a "$OUT/compile_check.log"
    timeout 90 python3 benchmarks/compile_check.py --steps 5 --batch 16 $flags 2>&1 | grep '^{' | tee -a "$OUT/compile_check.log"
  done
}

missing() {  # rows cut by the first session's 330 s limit, with the paper U-Net as the anchor
  timeout 150 python3 benchmarks/throughput.py --device cuda --modes bf16,bf16+cl \
    --models unet-cbam,unetpp-none,smp-unet-resnet34-aux --out "$OUT/missing" 2>&1 | grep -v '^{'
}

grid() {  # every backbone x attention x mode, smp reference
  timeout 330 python3 benchmarks/throughput.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/throughput.log" | grep -v '^{'
}

fit() {  # paper U-Net (CBAM, 224 px) trained by fit() on phantom slices, 8x expansion
  timeout 200 python3 - <<'PY' 2>&1 | tee "$OUT/fit.log"
import json, os, time
from lungmtl.config import load_config
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.training import fit
out = os.environ.get("OUT", "gpu-results")
src = write_phantom_dataset("/tmp/phantom", n_patients=24, n_slices=32, size=256, seed=0)
for extra in ([], ["train.compile=true"]):
    cfg = load_config("configs/paper-unet.yaml", [
        f"data.sources=['{src}']", "data.cache_dir=/tmp/cache", "data.balance=null",
        "train.epochs=3", "train.batch_size=128", *extra])
    t = time.perf_counter()
    r = fit(cfg, f"/tmp/run{len(extra)}", progress=False)
    rows = [{k: v for k, v in h.items() if k in ("epoch", "train_slices_per_s", "train_seconds",
             "epoch_seconds", "val_dice", "val_auc")} for h in r.history]
    print(json.dumps({"compile": bool(extra), "wall_s": time.perf_counter() - t, "epochs": rows}))
PY
}

demo() {
  ( time python3 -m lungmtl demo --out /tmp/demo -q ) 2>&1 | tail -8 | tee "$OUT/demo.log"
}

for step in $STEPS; do
  echo "== $step $(date +%T)" | tee -a "$OUT/steps.log"
  "$step"
done
