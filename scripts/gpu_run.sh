#!/usr/bin/env bash
# The default model's whole GPU step in one run: throughput tables, the peer comparison, the model to ship.
#
#   OUT=/results bash scripts/gpu_run.sh [PACK]                  # on a GPU machine; everything lands in $OUT
#   DRY_RUN=1 OUT=/tmp/o PEER_MIN=0.05 bash scripts/gpu_run.sh PACK   # the same steps on the CPU, as a check
#
# PACK: a training pack from scripts/make_training_pack.py at the model's in-plane spacing
# (default .traincache/spider-1.2mm: python scripts/make_training_pack.py ../shared/data/spider-t2space
# -o .traincache/spider-1.2mm --inplane-mm 1.2). Steps:
#   1. throughput: benchmarks/networks_gpu.py (one bf16 training step, windows/s and peak GiB, hybrid and
#      nnunet-like, eager and channels-last) and benchmarks/training_gpu.py (the real loop, default preset);
#   2. the peer comparison: `spineseg train` of hybrid and nnunet-like on one fixed split (--val-fraction 0.2
#      --seed 0: the 7 cases the CPU model held out) with the same --time-budget PEER_MIN each (unetpp too
#      when UNETPP=1), validated once at the end; scripts/peer_table.py writes the table;
#   3. the model to ship: the hybrid run of step 2 (it trains at the ship settings), exported to ONNX.
# Planned wall time on one H100/H200 with the defaults: about 2 min of set-up and throughput, 2 x 2.5 min
# of training, 1.5 min of caching, process starts, validation and export: about 8.5 minutes, for a 9-minute call.
# $OUT gets throughput.md, peer.md, model.tar.gz (model.json, model.safetensors, model.onnx),
# runs.tar.gz (configs, logs, validation reports) and log.txt.
# Python packages the GPU machine lacks travel in WHEELS (.whl/: wheels, or *.tar.xz of an unpacked wheel), put
# on PYTHONPATH from $WORK/site. SimpleITK and MONAI (scripts/gpu_wheels.sh: 28.4 MiB, xz) and the pack
# (22.8 MiB) do not fit one transfer of 64 MiB beside the 19 MiB checkout, so they go in two calls on the same
# machine: SETUP_ONLY=1 with WHEELS first (unpacks into $WORK/site and stops), then the run with the pack.
# Settings: PEER_MIN (2.5), WIDTH (12), INPLANE_MM (1.2), UNETPP (0), WORKERS (8), THROUGHPUT_STEPS (30),
# HYBRID_HPARAM / NNUNET_HPARAM / UNETPP_HPARAM (extra --hparam KEY=VALUE, space separated), EXTRA (more
# options for every training run), PYTHON (python3), WORK (/tmp/spineseg-gpu), WHEELS (.whl).
set -euo pipefail
PACK=${1:-.traincache/spider-1.2mm}
: "${OUT:?set OUT to the folder for the results}"
DRY_RUN=${DRY_RUN:-0}
PEER_MIN=${PEER_MIN:-2.5}
WIDTH=${WIDTH:-12}
INPLANE_MM=${INPLANE_MM:-1.2}
UNETPP=${UNETPP:-0}
WORKERS=${WORKERS:-8}
THROUGHPUT_STEPS=${THROUGHPUT_STEPS:-30}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/spineseg-gpu}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
SETUP_ONLY=${SETUP_ONLY:-0}
if [ "$SETUP_ONLY" != 1 ] && [ ! -d "$PACK" ]; then
  echo "gpu_run.sh: training pack $PACK not found; make it with scripts/make_training_pack.py" >&2; exit 2
fi
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/log.txt") 2>&1
stamp() { echo "[gpu_run $(printf '%5d' "$SECONDS") s] $*"; }

stamp "set-up"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  mkdir -p "$WORK/site"
  for w in "$WHEELS"/*.whl; do
    if [ -e "$w" ]; then "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$w"; fi
  done
  for a in "$WHEELS"/*.tar.xz; do
    if [ -e "$a" ]; then tar -xJf "$a" -C "$WORK/site"; fi
  done
fi
# the packages stay in $WORK/site: a second call on the same machine (SETUP_ONLY=1 first) finds them there
if [ -d "$WORK/site" ]; then export PYTHONPATH="$WORK/site:$PYTHONPATH"; fi
"$PY" -c "import torch, monai, SimpleITK, safetensors, onnx; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "$SETUP_ONLY" = 1 ]; then stamp "set-up only: packages in $WORK/site"; exit 0; fi
DEVICE=cuda
[ "$DRY_RUN" = 1 ] && DEVICE=cpu

stamp "1. throughput"
if [ "$DRY_RUN" = 1 ]; then
  "$PY" benchmarks/networks_gpu.py --names hybrid nnunet-like --modes eager channels_last --dry-run-cpu \
    > "$OUT/throughput.md"
  echo "(dry run: benchmarks/training_gpu.py needs CUDA; not run)" >> "$OUT/throughput.md"
else
  "$PY" benchmarks/networks_gpu.py --names hybrid nnunet-like --modes eager channels_last \
    --steps "$THROUGHPUT_STEPS" > "$OUT/throughput.md"
  "$PY" benchmarks/training_gpu.py --models hybrid nnunet-like --presets default --cases 2 --windows 64 \
    --workers "$WORKERS" --width "$WIDTH" >> "$OUT/throughput.md"
fi
cat "$OUT/throughput.md"

stamp "2. peer comparison, ${PEER_MIN} min each"
MODELS=(hybrid nnunet-like)
[ "$UNETPP" = 1 ] && MODELS+=(unetpp)
RUNS=()
for model in "${MODELS[@]}"; do
  case "$model" in
    hybrid) read -r -a HP <<< "width=$WIDTH ${HYBRID_HPARAM:-}" ;;
    nnunet-like) read -r -a HP <<< "${NNUNET_HPARAM:-}" ;;
    unetpp) read -r -a HP <<< "${UNETPP_HPARAM:-}" ;;
  esac
  HPARAMS=()
  for kv in "${HP[@]}"; do HPARAMS+=(--hparam "$kv"); done
  run="$WORK/runs/$model"
  rm -rf "$run"
  stamp "   $model"
  "$PY" -m spineseg train "$PACK" -o "$run" --model "$model" "${HPARAMS[@]}" --preset default \
    --inplane-mm "$INPLANE_MM" --thick-prob 0.5 --time-budget "$PEER_MIN" --val-every 1000000 \
    --val-fraction 0.2 --seed 0 --device "$DEVICE" --workers "$WORKERS" --cache "$WORK/cache" "${EXTRA_ARGS[@]}"
  RUNS+=("$run")
done
TITLE="Peer comparison: one split (--val-fraction 0.2 --seed 0), ${PEER_MIN} min each, $DEVICE"
"$PY" scripts/peer_table.py "${RUNS[@]}" --title "$TITLE" > "$OUT/peer.md"
cat "$OUT/peer.md"

stamp "3. the model to ship: hybrid width $WIDTH at $INPLANE_MM mm, exported"
"$PY" -m spineseg export "$WORK/runs/hybrid/model" --onnx
tar -C "$WORK/runs/hybrid" -czf "$OUT/model.tar.gz" model
tar -C "$WORK" -czf "$OUT/runs.tar.gz" --exclude=checkpoints --exclude=tensorboard --exclude=model --exclude=cache runs
stamp "done; results in $OUT"
