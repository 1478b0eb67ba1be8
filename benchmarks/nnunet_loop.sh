#!/bin/bash
# Close the loop with nnU-Net v2 on a tiny phantom export (issue 23): lungmtl exports, nnU-Net
# verifies the dataset, trains its 2d configuration for 1 epoch on the CPU, predicts the test
# cases, and lungmtl scores nnU-Net's output folder. The figures of one CPU epoch mean nothing;
# the path working end to end does. nnU-Net lives in its own environment (its torch differs):
#
#   python -m venv /tmp/nnenv && /tmp/nnenv/bin/pip install torch==2.13.0 nnunetv2
#   NNENV=/tmp/nnenv bash benchmarks/nnunet_loop.sh          # from the repository, lungmtl's venv active
set -euo pipefail
NNENV=${NNENV:-/tmp/nnenv}
WORK=${WORK:-$(mktemp -d /tmp/lungmtl-nnunet.XXXX)}
ID=${ID:-502}
echo "work folder: $WORK"
python - "$WORK" "$ID" <<'PY'
import sys
from pathlib import Path

import numpy as np

from lungmtl.data.nnunet import assign_split, export_nnunet
from lungmtl.data.phantom import write_phantom_dataset
from lungmtl.data.sources import load_sources

work, ident = Path(sys.argv[1]), int(sys.argv[2])
data = write_phantom_dataset(work / "phantom", n_patients=10, n_slices=8, size=64, seed=3)
table = load_sources([data])
patients = sorted(table["patient"].unique())
held = table[table["patient"].isin(patients[:4])]
record = held.assign(split=np.where(held["patient"].isin(patients[:2]), "val", "test"))
record = record[["source", "patient", "image", "index", "split"]].astype(str)
export_nnunet(assign_split(table, record), work / "raw", dataset_id=ident, name="Phantom")
PY
export nnUNet_raw="$WORK/raw" nnUNet_preprocessed="$WORK/pre" nnUNet_results="$WORK/res"
DS=$(printf "Dataset%03d_Phantom" "$ID")
"$NNENV/bin/nnUNetv2_plan_and_preprocess" -d "$ID" --verify_dataset_integrity -c 2d -np 1
cp "$nnUNet_raw/$DS/splits_final.json" "$nnUNet_preprocessed/$DS/"
"$NNENV/bin/nnUNetv2_train" "$ID" 2d 0 -tr nnUNetTrainer_1epoch -device cpu
"$NNENV/bin/nnUNetv2_predict" -i "$nnUNet_raw/$DS/imagesTs" -o "$WORK/pred" -d "$ID" -c 2d -f 0 \
    -tr nnUNetTrainer_1epoch -device cpu --save_probabilities
lungmtl evaluate --predictions "$WORK/pred" --truth "$nnUNet_raw/$DS" --out "$WORK/eval"
