#!/usr/bin/env bash
# On a lent GPU machine: the default tokenizers' recipe (tools/train_default.py) at a GPU budget (bf16 autocast),
# with the CUDA kernel tests running beside it (unless TEST_SECONDS=0). What comes back under $OUT: the finished
# models packed as fp16 parts under 16 MiB (train_default.py --pack), comparison.json, the recipe's log, the
# tests' result.
#   bash tools/gpu_train_default.sh DATA [RECIPE ARGS...]
#     DATA: a folder the recipe prepared here (`train_default.py --out runs/gpu --prepare-only`, carried: the GPU
#     machine lacks the packages that hold the photos and clips); RECIPE ARGS are appended (the last value of an
#     option wins), e.g. `--from-shipped --continue-video --video-steps 1300 --video-lr 3e-4` trains the shipped
#     video model on. Each stage trains for a time budget (DEFAULT_SECONDS, VIDEO_SECONDS: 200 and 250 s) unless
#     RECIPE ARGS name its steps (--default-steps, --video-steps) or the variable is set empty.
#     Environment: BATCH, WORKERS, STEPS, DEFAULT_SECONDS, VIDEO_SECONDS, TEST_SECONDS (kernel-test time limit in
#     seconds, 300; 0: no kernel tests, all device time to training).
# Install here afterwards: python tools/train_default.py --out runs/gpu --data DATA --unpack OUT --install
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: gpu_train_default.sh PREPARED_DATA_FOLDER [RECIPE ARGS...]}
shift
OUT=${OUT:-gpu-out}
RUN=${RUN:-/tmp/default-run}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. PYTHONUNBUFFERED=1 TQDM_DISABLE=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/machine.txt" 2>&1
python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

tests=
if [ "${TEST_SECONDS:-300}" != 0 ]; then
  (OMP_NUM_THREADS=2 timeout "${TEST_SECONDS:-300}" python -m pytest tests/kernels -q -x -p no:cacheprovider \
    > "$OUT/tests.txt" 2>&1; echo "pytest exit $?" >> "$OUT/tests.txt") &
  tests=$!
fi

# a stage's time budget, unless the recipe args name its steps or the variable is set empty (a budget would win)
default_seconds=${DEFAULT_SECONDS-200} video_seconds=${VIDEO_SECONDS-250}
for arg in "$@"; do
  case "$arg" in
    --default-steps | --default-steps=*) default_seconds= ;;
    --video-steps | --video-steps=*) video_seconds= ;;
  esac
done
budgets=()
[ -n "$default_seconds" ] && budgets+=(--default-seconds "$default_seconds")
[ -n "$video_seconds" ] && budgets+=(--video-seconds "$video_seconds")
python tools/train_default.py --out "$RUN" --data "$DATA" --device cuda --batch-size "${BATCH:-64}" \
  --workers "${WORKERS:-12}" --steps "${STEPS:-450}" ${budgets[@]+"${budgets[@]}"} --pack "$OUT" "$@" 2>&1 |
  tee "$OUT/recipe.log"
status=${PIPESTATUS[0]}
if [ -n "$tests" ]; then
  wait "$tests"
  tail -n 3 "$OUT/tests.txt"
fi
exit "$status"
