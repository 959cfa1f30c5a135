#!/usr/bin/env bash
# The Python packages a bare GPU machine with PyTorch lacks for scripts/gpu_run.sh, as one small archive.
#
#   bash scripts/gpu_wheels.sh [DIR]          # default .whl/ ; writes DIR/deps.tar.xz
#
# SimpleITK and MONAI are downloaded as wheels for CPython 3.12 on x86-64 Linux (--no-deps: torch,
# numpy and the rest are there), unpacked, and packed with xz: 28.4 MiB for both instead of 52 MiB of
# wheels (SimpleITK alone is 50 MiB as a wheel). gpu_run.sh unpacks
# DIR/*.tar.xz onto PYTHONPATH.
set -euo pipefail
DIR=${1:-.whl}
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$tmp/wheels" SimpleITK monai
mkdir -p "$tmp/site" "$DIR"
for w in "$tmp"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$tmp/site"; done
tar -C "$tmp/site" -cf - . | xz -6 -T2 > "$DIR/deps.tar.xz.tmp"
mv "$DIR/deps.tar.xz.tmp" "$DIR/deps.tar.xz"
ls -l "$DIR/deps.tar.xz"
