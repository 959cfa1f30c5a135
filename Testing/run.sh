#!/usr/bin/env bash
# The slicer-core tier: Testing/Python against real Slicer MRML (the slicer-core wheel), once per version,
# each in its own pytest process (the harness patches the "slicer" package).
#
#   Testing/run.sh [PYTHON]          PYTHON: the interpreter with SpineSeg's test install (default .venv/bin/python)
#
# Versions: 5.12.4.0 and the newest on the package index (SPINESEG_SLICER_CORE_VERSIONS overrides, space-separated).
# Each version is installed once, without touching the interpreter's own packages, into
# Testing/.venvs/slicer-core-VERSION (git-ignored) and put on PYTHONPATH. A version with no wheel for this
# Python or platform is reported and skipped; the tier then passes without it.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
pip=("$python" -m pip -q --disable-pip-version-check)

versions="${SPINESEG_SLICER_CORE_VERSIONS:-}"
if [ -z "$versions" ]; then
  newest="$("$python" -m pip index versions slicer-core 2>/dev/null | sed -n 's/^slicer-core (\(.*\))$/\1/p' | head -1)"
  versions="5.12.4.0 ${newest}"
fi

# install each version once; then run the versions side by side (2 cores: the tier waits mostly on
# the segmentation and training processes it starts), each in its own pytest process and log
logs="Testing/.venvs/logs"
mkdir -p "$logs"
ready=()
for version in $(echo "$versions" | tr ' ' '\n' | awk 'NF && !seen[$0]++'); do
  target="Testing/.venvs/slicer-core-${version}"
  if [ ! -f "$target/.complete" ]; then
    rm -rf "$target"
    # slicer-core pins its vtk; both go into the folder, nothing else (numpy etc. come from the interpreter)
    if ! "${pip[@]}" install --no-deps --target "$target" "slicer-core==${version}" >/dev/null 2>&1; then
      echo "slicer-core ${version}: no wheel for $("$python" -c 'import sys, platform; print(f"Python {sys.version_info[0]}.{sys.version_info[1]} on {platform.machine()}")'); skipped"
      rm -rf "$target"
      continue
    fi
    vtk="$(sed -n 's/^Requires-Dist: \(vtk[^;]*\)$/\1/p' "$target"/slicer_core-*.dist-info/METADATA | head -1)"
    "${pip[@]}" install --no-deps --target "$target" "${vtk:-vtk}" >/dev/null
    touch "$target/.complete"
  fi
  ready+=("$version")
done
if [ "${#ready[@]}" -eq 0 ]; then
  echo "slicer-core tier: no slicer-core version could be installed here; skipped"
  exit 0
fi

pids=()
for version in "${ready[@]}"; do
  (
    start=$(date +%s)
    rc=0
    PYTHONPATH="$PWD/Testing/.venvs/slicer-core-${version}${PYTHONPATH:+:$PYTHONPATH}" \
      "$python" -m pytest -q -p no:cacheprovider Testing/Python > "$logs/${version}.log" 2>&1 || rc=$?
    echo "slicer-core ${version}: tier took $(( $(date +%s) - start )) s" >> "$logs/${version}.log"
    exit "$rc"
  ) &
  pids+=($!)
done
status=0
for i in "${!ready[@]}"; do
  wait "${pids[$i]}" || status=1
  echo "== slicer-core ${ready[$i]}"
  # VTK's own log lines (missing default terminology files in the wheel, ...) are noise here
  grep -v -E '^(\x1b\[[0-9;]*m)*[0-9-]+ [0-9:.]+ +\( *[0-9.]+s\) \[' "$logs/${ready[$i]}.log" || true
done
exit "$status"
