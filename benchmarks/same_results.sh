#!/usr/bin/env bash
# Behaviour check for refactors: the same short cpu-small run, test evaluation and prediction in
# two checkouts, then a comparison of metrics.json (all keys but the checkpoint path) and of the
# prediction's slices.csv / mask.nii.gz. One thread on one core, so the two runs are comparable.
#   benchmarks/same_results.sh OLD_CHECKOUT NEW_CHECKOUT OUT
# Data: $LUNGMTL_DATA (default ../shared/data). Each checkout is run with `python -m lungmtl` from its own root (the active environment's
# python; a checkout's own lungmtl/ comes first on sys.path).
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); out=$(realpath -m "$3")
data=$(realpath "${LUNGMTL_DATA:-../shared/data}")  # the same data for both, wherever they are
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for side in old new; do
  repo=${!side}; dir=$out/$side
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$repo"
   taskset -c 0 python -m lungmtl train -q --config configs/cpu-small.yaml \
     --set train.epochs=2 --set "data.sources=[$data]" --out "$dir/run"
   taskset -c 0 python -m lungmtl evaluate -q --checkpoint "$dir/run" --split test --out "$dir/eval"
   taskset -c 0 python -m lungmtl predict -q "$data/covid-ct-md/P001" --out "$dir/pred")
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
a, b = (json.loads((out / s / "eval" / "metrics.json").read_text()) for s in ("old", "new"))
a.pop("checkpoint"), b.pop("checkpoint")
print("metrics.json:", "identical" if a == b else "DIFFERENT")
for f in ("slices.csv", "mask.nii.gz"):
    same = (out / "old/pred/P001" / f).read_bytes() == (out / "new/pred/P001" / f).read_bytes()
    print(f"P001 {f}:", "identical" if same else "DIFFERENT")
PY
