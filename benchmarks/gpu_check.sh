#!/usr/bin/env bash
# The device check on a bare GPU machine (Python 3.12, torch, transformers and their dependencies, pillow, xxhash,
# peft; no pydantic, no diskcache, no registry): installs what it lacks from the wheel folder `make gpu-wheels`
# builds, puts the project on PYTHONPATH and runs benchmarks/gpu_check.py. Everything goes to stdout; the exit
# status is gpu_check.py's (1: a step failed, 2: no such device, 124: over the time limit).
#
#   make gpu-wheels                                  # here, once: .gpu-wheels/
#   benchmarks/gpu_check.sh [OUT]                    # on the GPU machine; OUT also gets the bench's bench.json
#   GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh     # the same steps here, tiny shapes
#
# PY (default python3): the interpreter. GPU_CHECK_WHEELS: the wheel folder (default .gpu-wheels).
# GPU_CHECK_INSTALL=all: install every wheel that fits this Python, even where the package is installed
# already (proves the folder is complete). GPU_CHECK_TIMEOUT: seconds for the whole check (default 300 on a GPU,
# 1200 on the CPU).
# GPU_CHECK_ARGS: extra arguments for gpu_check.py (e.g. "--skip bench").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
LIMIT=${GPU_CHECK_TIMEOUT:-$([ "${DEVICE%%:*}" = cuda ] && echo 300 || echo 1200)}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.gpu-wheels}
start=$(date +%s)

TARGET=$(mktemp -d "${TMPDIR:-/tmp}/minirerank-gpu-check.XXXXXX")
trap 'rm -rf "$TARGET"' EXIT
if [ -d "$WHEELS" ]; then
  every=()
  [ "${GPU_CHECK_INSTALL:-}" = "all" ] && every=(--every-wheel)
  mapfile -t wheels < <("$PY" "$ROOT/benchmarks/gpu_check.py" --pick-wheels "$WHEELS" "${every[@]}")
  if [ "${#wheels[@]}" -gt 0 ]; then
    echo "gpu_check: installing into $TARGET: ${wheels[*]##*/}"
    if "$PY" -m pip --version >/dev/null 2>&1; then
      "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$TARGET" "${wheels[@]}"
    else  # no pip: a wheel is a zip laid out for site-packages
      "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
        "$TARGET" "${wheels[@]}"
    fi
  else
    echo "gpu_check: every package of $WHEELS is installed already"
  fi
else
  echo "gpu_check: no wheel folder at $WHEELS (run 'make gpu-wheels' before copying the tree to a bare machine)"
fi
export PYTHONPATH="$ROOT:$TARGET${PYTHONPATH:+:$PYTHONPATH}"

status=0
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a word list on purpose
timeout "$LIMIT" "$PY" -u "$ROOT/benchmarks/gpu_check.py" --device "$DEVICE" \
  ${1:+--out "$1"} ${GPU_CHECK_ARGS:-} 2>&1 || status=$?
if [ "$status" -eq 124 ]; then echo "gpu_check: FAILED: over $LIMIT s"; fi
echo "gpu_check.sh: exit $status after $(($(date +%s) - start)) s"
exit "$status"
