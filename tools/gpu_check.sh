#!/usr/bin/env bash
# On a lent GPU machine (torch + triton + pytest + pytest-benchmark preinstalled, no package index):
# CUDA tests of every kernel path, then all benchmarks, with results written under $OUT.
#   OUT=/tmp/out bash tools/gpu_check.sh        (the device tool sets $OUT itself)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=.
status=0

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

echo "== CUDA tests (Triton and PyTorch paths, fp32/fp16/bf16)"
timeout 240 python -m pytest tests/kernels -q -x -p no:cacheprovider > "$OUT/tests.txt" 2>&1 || status=1
tail -n 3 "$OUT/tests.txt"

echo "== side-by-side report"
timeout 240 python benchmarks/report.py --tokenizer --video --markdown "$OUT/report.md" > "$OUT/report.txt" 2>&1 || status=1
cat "$OUT/report.txt"

echo "== pytest-benchmark, full grid"
BENCH_FULL=1 timeout 420 python -m pytest benchmarks -q -p no:cacheprovider \
  --benchmark-json="$OUT/benchmarks.json" --benchmark-columns=min,median,rounds > "$OUT/benchmarks.txt" 2>&1 || status=1
tail -n 60 "$OUT/benchmarks.txt"
exit $status
