#!/usr/bin/env bash
# Issue 6's comparison on a GPU machine: every column of the ablation table, same folds, same windows.
#
#   bash scripts/run_cv_gpu.sh [PACK] [OUT]
#
# PACK: a training pack from scripts/make_training_pack.py (default .traincache/spider-0.9mm, 42 MiB: carry it);
# OUT: results (default runs/cv). Run it again to continue: finished folds are skipped (--resume).
# Settings through the environment: EPOCHS (200), FOLDS (5), DEVICE (cuda), MODELS (the default-preset columns),
# EXTRA (more options for every run, e.g. "--batch 16").
#
# The paper column keeps its recipe (binary target, MSE, Adam, step decay, flips only) but draws every case
# with 8 windows per epoch, as the default preset does, instead of 40% of the cases with 16 windows: the same
# windows per epoch in expectation per case, and exactly the same number of training windows as every other column.
set -euo pipefail
PACK=${1:-.traincache/spider-0.9mm}
OUT=${2:-runs/cv}
EPOCHS=${EPOCHS:-200}
FOLDS=${FOLDS:-5}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-hybrid,no-ux,no-hanc,resunet,unetpp,nnunet-like}
SPINESEG=${SPINESEG:-python -m spineseg}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
COMMON=(--folds "$FOLDS" --epochs "$EPOCHS" --device "$DEVICE" --seed 0 --cache "$OUT/cache" "${EXTRA_ARGS[@]}")

resume() { if [ -f "$1/split.json" ]; then echo --resume; fi; }

$SPINESEG cv "$PACK" -o "$OUT/default" --models "$MODELS" "${COMMON[@]}" $(resume "$OUT/default")
$SPINESEG cv "$PACK" -o "$OUT/paper" --preset paper --models hybrid --cases-per-epoch 1.0 --windows-per-case 8 \
  "${COMMON[@]}" $(resume "$OUT/paper")
$SPINESEG ablation "$OUT/default" "$OUT/paper" -o "$OUT/table" --overwrite \
  --title "Ablation: ${FOLDS}-fold CV on $(basename "$PACK"), ${EPOCHS} epochs per fold"
