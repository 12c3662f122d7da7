#!/usr/bin/env bash
# One GPU run for the day a device is lent (< 5 min on an H100): the CUDA-marked tests
# (CPU/GPU agreement, autocast + channels-last, the OOM fallback under a small memory budget),
# then the figures of benchmarks/bench_gpu.py (slices/s at 256² and 512², a 155x240x240 volume,
# every checkpoint on one slice, peak GPU memory). Record the figures, with the card, in
# benchmarks/README.md.
#
#   benchmarks/gpu_check.sh                  # exit 1 when no CUDA device is visible
#   benchmarks/gpu_check.sh --allow-no-cuda  # exit 0 without one (CI, the CPU test of this script)
#   PYTHON=/path/to/python benchmarks/gpu_check.sh   # default: .venv/bin/python, else python3
set -euo pipefail
cd "$(dirname "$0")/.."

allow_no_cuda=0
for arg in "$@"; do
  case "$arg" in
    --allow-no-cuda) allow_no_cuda=1 ;;
    *) echo "gpu_check: unknown option $arg (use --allow-no-cuda)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  if [ "$allow_no_cuda" = 1 ]; then
    echo "gpu_check: no CUDA device visible; nothing to measure (--allow-no-cuda: exit 0)"
    exit 0
  fi
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False)" >&2
  exit 1
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
start=$(date +%s)

echo "== CUDA-marked tests"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_gpu.py
timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_inference.py -k cuda

echo "== figures"
timeout 150 "$PY" benchmarks/bench_gpu.py

echo "gpu_check: done in $(( $(date +%s) - start )) s"
