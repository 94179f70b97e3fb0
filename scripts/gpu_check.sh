#!/usr/bin/env bash
# What only a CUDA GPU can show, in under 10 minutes on one H100 host (16 cores): the steps' time
# limits add up to 570 s.
#   1. the tests marked `cuda`: the CUDA-graph update against the eager one, each Fisher estimator
#      on the GPU against the per-sample loop (float64), the replay on the GPU against real ALE
#      episodes, and a short two-game training loop in `cuda-graph` mode against `eager` (equal
#      game-end checkpoints: weights, Adam's moments, Fisher and anchors);
#   2. the throughput benchmark with its standard settings (python -m bench: bench/measure.py);
#   3. a short Pong training run through train.py, the way a user starts one.
#
#   scripts/gpu_check.sh OUTDIR            # run everything, figures and logs into OUTDIR
#   scripts/gpu_check.sh OUTDIR --dry-run  # print the steps without running them (works on any machine)
#
# OUTDIR gets summary.txt (each step: command, result, seconds; then the figures), nvidia-smi.txt,
# pytest-cuda.log, throughput.json and throughput.txt, pong-run/ (TensorBoard events, checkpoints),
# pong-run.log and pong-figures.txt. Every step runs even when an earlier one failed (each has its
# own time limit); the script exits non-zero when any step failed. PYTHON overrides the interpreter.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
    echo "usage: $0 OUTDIR [--dry-run]" >&2
    exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
DRY_RUN=${2:-}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
failed=0

# step NAME SECONDS LOG COMMAND...: run COMMAND under a time limit, output into LOG, record the outcome.
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    echo "== $name: $*" | tee -a "$SUMMARY"
    if [ "$DRY_RUN" = "--dry-run" ]; then
        echo "   (dry run: not started)" | tee -a "$SUMMARY"
        return 0
    fi
    local started=$SECONDS status=0
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || status=$?
    local outcome="ok"
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        outcome="FAILED (over its ${limit} s limit)"
    elif [ "$status" -ne 0 ]; then
        outcome="FAILED (exit $status)"
    fi
    [ "$status" -eq 0 ] || failed=$((failed + 1))
    echo "   $outcome in $((SECONDS - started)) s; log: $log" | tee -a "$SUMMARY"
}

step "GPU" 10 "$OUT/nvidia-smi.txt" nvidia-smi
step "tests marked cuda" 180 "$OUT/pytest-cuda.log" "$PYTHON" -m pytest -m cuda -q -rs --durations=10 tests
step "throughput benchmark (standard settings)" 210 "$OUT/throughput.txt" \
    "$PYTHON" -m bench --device cuda --out "$OUT/throughput.json"
step "Pong, 200k agent steps" 140 "$OUT/pong-run.log" \
    "$PYTHON" train.py --games pong --steps-per-game 200000 --device cuda --fisher-samples 640 \
    --run-dir "$OUT/pong-run" --overwrite \
    --set env.num_envs=16 --set agent.update_mode=auto --set agent.learning_starts=20000 --set run.log_every=20000 --set eval.eval_every=0
step "Pong figures" 30 "$OUT/pong-figures.txt" "$PYTHON" - "$OUT/pong-run" <<'PY'
# The Pong run's own figures, read back from its TensorBoard events.
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

events = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
events.Reload()
tags = events.Tags()["scalars"]
for tag in ("charts/SPS", "charts/pong/episodic_return", "losses/pong/td_loss", "fisher/pong/seconds"):
    values = [event.value for event in events.Scalars(tag)] if tag in tags else []
    print(f"{tag}: last {values[-1]:.4g}, max {max(values):.4g}, {len(values)} points" if values else f"{tag}: missing")
PY

if [ "$DRY_RUN" != "--dry-run" ]; then
    for figures in "$OUT/throughput.txt" "$OUT/pong-figures.txt"; do
        { echo; echo "== $(basename "$figures")"; grep -v '%|' "$figures" | tail -n 40 || true; } >>"$SUMMARY"
    done
fi
echo "$failed step(s) failed; summary: $SUMMARY"
[ "$failed" -eq 0 ]
