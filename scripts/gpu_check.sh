#!/usr/bin/env bash
# What only a CUDA GPU can show, in at most 8 minutes on one GPU host (16 cores): six steps, each under
# its own time limit; the limits add up to 445 s (475 s if every step also used the 5 s it is given to
# stop after its limit).
#   1. nvidia-smi;
#   2. the tests marked `cuda`: the CUDA-graph update against the eager one, each Fisher estimator
#      on the GPU against the per-sample loop (float64), the replay on the GPU against real ALE
#      episodes, and a short two-game training loop in `cuda-graph` mode against `eager` (equal
#      game-end checkpoints: weights, Adam's moments, Fisher and anchors). They collect with the
#      project's required packages alone: tests that need av, ray, rliable or arch are skipped;
#   3. the throughput benchmark, every window halved (python -m bench --quick: bench/measure.py);
#   3b. many cells in one process: MinAtar populations of 1, 8 and 32 cells against processes apart
#      (python -m bench.population: bench/population.py);
#   4. a short Pong training run through train.py, the way a user starts one (its defaults: 8
#      emulators, update_mode auto, i.e. captured acting and updates checked against eager), learning
#      from step 20,000 instead of 80,000 and without checkpoints or evaluation while it trains;
#   5. that run's figures, read back from its TensorBoard events: agent steps/s after learning
#      starts, episode returns, TD loss, the Fisher's seconds.
#
#   scripts/gpu_check.sh OUTDIR              # run everything, figures and logs into OUTDIR
#   scripts/gpu_check.sh --dry-run [OUTDIR]  # print the plan (steps, commands, limits, total); runs and
#                                            # writes nothing, needs no GPU
#
# OUTDIR gets eight flat files: summary.md (each step: command, limit, outcome, seconds; then every
# figure), nvidia-smi.txt, pytest-cuda.log, throughput.json, throughput.txt, population.txt,
# pong-run.log and pong-figures.txt. The Pong run directory (checkpoints, TensorBoard events) goes to
# $GPU_CHECK_RUNS/pong (default runs/gpu-check/pong), outside OUTDIR. Every step runs even when an
# earlier one failed; the script exits non-zero when any step failed. PYTHON overrides the
# interpreter (default: python, else python3).
set -euo pipefail

usage() {
    echo "usage: $0 OUTDIR | $0 --dry-run [OUTDIR]" >&2
    exit 2
}
DRY_RUN=0
OUT=
for argument in "$@"; do
    case $argument in
    --dry-run) DRY_RUN=1 ;;
    -*) usage ;;
    *)
        if [ -n "$OUT" ]; then usage; fi
        OUT=$argument
        ;;
    esac
done
[ -n "$OUT" ] || [ "$DRY_RUN" = 1 ] || usage
# shellcheck source-path=SCRIPTDIR source=lib/timed_steps.sh
source "$(dirname "$0")/lib/timed_steps.sh"
prepare_outdir
cd "$(dirname "$0")/.."
RUNS=${GPU_CHECK_RUNS:-runs/gpu-check}
KILL_AFTER=5
PONG_STEPS=160000
LEARNING_STARTS=20000
failed=0
total=0
steps=0

# step NAME SECONDS LOG COMMAND...: run COMMAND under a time limit, output into LOG, record the outcome.
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    total=$((total + limit))
    steps=$((steps + 1))
    note "== $name [limit $limit s]"
    note "   \$ $* > $log"
    [ "$DRY_RUN" = 0 ] || return 0
    local started=$SECONDS status=0
    timeout --kill-after=$KILL_AFTER "$limit" "$@" >"$log" 2>&1 || status=$?
    [ "$status" -eq 0 ] || failed=$((failed + 1))
    note "   $(outcome "$status" "$limit") in $((SECONDS - started)) s"
}

open_summary "GPU check"
step "GPU" 10 "$OUT/nvidia-smi.txt" nvidia-smi
step "tests marked cuda" 140 "$OUT/pytest-cuda.log" "$PYTHON" -m pytest -m cuda -q -rfEs --durations=10 tests
step "throughput benchmark (--quick)" 90 "$OUT/throughput.txt" \
    "$PYTHON" -m bench --device cuda --quick --out "$OUT/throughput.json"
step "many cells in one process (MinAtar, 1, 8 and 32 cells)" 70 "$OUT/population.txt" \
    "$PYTHON" -m bench.population --device cuda --cells 1,8,32 --apart-up-to 8 --out "$RUNS/population.json"
step "Pong with train.py's defaults, $PONG_STEPS agent steps" 120 "$OUT/pong-run.log" \
    "$PYTHON" train.py --games pong --steps-per-game $PONG_STEPS --device cuda --fisher-samples 640 \
    --run-dir "$RUNS/pong" --overwrite --set agent.learning_starts=$LEARNING_STARTS \
    --set run.checkpoint_every=0 --set eval.eval_every=0
step "Pong figures" 15 "$OUT/pong-figures.txt" "$PYTHON" - "$RUNS/pong" <<'PY'
# The Pong run's own figures, read back from its TensorBoard events.
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ewc_experiments.sweep_report import agent_steps_per_second

run = Path(sys.argv[1])
print(f"agent steps/s after learning starts (mean of charts/SPS): {agent_steps_per_second(run):,.0f}")
events = EventAccumulator(str(run), size_guidance={"scalars": 0})
events.Reload()
tags = events.Tags()["scalars"]
for tag in ("charts/SPS", "charts/pong/episodic_return", "losses/pong/td_loss", "fisher/pong/seconds"):
    values = [event.value for event in events.Scalars(tag)] if tag in tags else []
    print(f"{tag}: last {values[-1]:.4g}, max {max(values):.4g}, {len(values)} points" if values else f"{tag}: missing")
PY

note ""
note "time limits: $total s in all ($((total + steps * KILL_AFTER)) s if every step also used its $KILL_AFTER s to stop)"
if [ "$DRY_RUN" = 1 ]; then
    exit 0
fi
{
    echo
    echo "## tests marked cuda"
    echo
    grep -E "^(FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed|skipped|error)" "$OUT/pytest-cuda.log" | tail -n 30 || true
    for figures in "$OUT/throughput.txt" "$OUT/population.txt" "$OUT/pong-figures.txt"; do
        echo
        echo "## $(basename "$figures")"
        echo
        grep -v '%|' "$figures" | tail -n 60 || true
    done
} >>"$SUMMARY"
echo "$failed step(s) failed; summary: $SUMMARY" | tee -a "$SUMMARY"
[ "$failed" -eq 0 ]
