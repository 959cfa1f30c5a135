#!/usr/bin/env bash
# Train, export and evaluate the bundled default model (Resources/Models/spineseg-default).
#
#   bash scripts/train_default_model.sh [DATA] [RUN]
#
# DATA: the shared SPIDER t2_SPACE subset (default ../shared/data/spider-t2space); RUN: the run folder
# (default runs/cpu-hybrid-w8). This is the CPU recipe that made the shipped model: a width-8 hybrid at
# 1.2 mm in-plane, half of the windows thick-slice simulated, 90 epochs of 104 windows, seed 0, 7 of the
# 33 cases held out (--val-fraction 0.2). On the 2-core build machine it took the time recorded in the
# model card. A GPU session should replace it by the full recipe (5-fold CV, width 16, all cases).
set -euo pipefail
DATA=${1:-../shared/data/spider-t2space}
RUN=${2:-runs/cpu-hybrid-w8}
SPINESEG=${SPINESEG:-.venv/bin/spineseg}

"$SPINESEG" train "$DATA" -o "$RUN" --cache runs/cache \
  --preset default --model hybrid --hparam width=8 --inplane-mm 1.2 --thick-prob 0.5 \
  --epochs 90 --windows-per-case 4 --batch 4 --val-every 5 --workers 0 --device cpu --seed 0
"$SPINESEG" export "$RUN/model" --onnx
.venv/bin/python scripts/evaluate_model.py "$RUN/model" "$DATA" -o "$RUN/heldout" --overwrite --record
echo "to ship it: rm -r Resources/Models/spineseg-default; cp -r $RUN/model Resources/Models/spineseg-default"
