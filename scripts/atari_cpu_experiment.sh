#!/usr/bin/env bash
# Forgetting on real Atari on a CPU: Pong, then Breakout with EWC and with fine-tuning, behind
# docs/results/atari-pong-breakout.md. One command that resumes wherever it stopped:
#
#   bash scripts/atari_cpu_experiment.sh [RUNS_DIR [STAGE ...]]      # RUNS_DIR defaults to runs/atari-cpu
#
# configs/atari-cpu.yaml, one torch thread per run, seed SEED (default 0); each run's output goes to
# RUNS_DIR/<run>.log. Stages:
#   pong       RUNS_DIR/pong-s<seed>: Pong alone, PONG_STEPS agent steps (default 640,000; ~2.5 h on one
#              core of the 2-core machine of the page), EWC's Fisher of Pong at its end
#   breakout   RUNS_DIR/{ewc,finetune}-s<seed>: branched from pong-s<seed>'s after_1_pong.pt, Breakout for
#              the preset's 300,000 agent steps, both at once (one core each)
#   evaluate   evaluate.py on each finished branch (the run's own protocol: 8 episodes, epsilon 0.05)
#   page       the runs' compact results into docs/results/atari-pong-breakout/cells/ (commit them),
#              then the page and its figure from the saved cells
# Name stages to run only those (default: all, in order). A run that exists is resumed (its replay
# is saved with every latest.pt, so the resume is exact); one that has finished is skipped; a stopped
# or failed run stops the script. `page` works at any point: it shows what has been trained so far.
# PYTHON overrides the interpreter, PAGE the page; TRAIN_OPTIONS (words) go to every new run, after
# its own options (so a --steps-per-game there replaces PONG_STEPS too), e.g. for a check of the whole
# pipeline in a minute (tests/ewc_experiments/test_branch_results.py does it):
#   TRAIN_OPTIONS="--set run.steps_per_game=256 --set env.num_envs=4 ..." PONG_STEPS=256 PAGE=/tmp/p.md \
#       bash scripts/atari_cpu_experiment.sh /tmp/runs
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
RUNS=${1:-runs/atari-cpu}
mkdir -p "$RUNS"
shift || true
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(pong breakout evaluate page)
PYTHON=${PYTHON:-python}
SEED=${SEED:-0}
PONG_STEPS=${PONG_STEPS:-640000}
PAGE=${PAGE:-docs/results/atari-pong-breakout.md}
read -ra OPTIONS <<<"${TRAIN_OPTIONS:-}"
METHODS=(ewc finetune)
export OMP_NUM_THREADS=1

# train RUN_DIR ARGUMENT...: resume the run from its newest checkpoint (nothing when it is done), or
# start it with ARGUMENTs: a new run, or one stopped before its first checkpoint (started again).
train() {
    local run=$1
    shift
    if compgen -G "$run/checkpoints/*.pt" >/dev/null; then
        "$PYTHON" train.py --resume "$run"
    else
        "$PYTHON" train.py --config configs/atari-cpu.yaml "$@" --run-dir "$run" --overwrite "${OPTIONS[@]}"
    fi
}

PONG=$RUNS/pong-s$SEED
for stage in "${STAGES[@]}"; do
    case $stage in
    pong)
        train "$PONG" --games pong --steps-per-game "$PONG_STEPS" --seed "$SEED" >>"$PONG.log" 2>&1
        ;;
    breakout)
        pids=()
        # a stopped script leaves no branch running alone: each $! is a subshell running train.py, so
        # its child is signalled too (SIGTERM: train.py saves latest.pt and its replay, then exits)
        trap 'for pid in "${pids[@]}"; do pkill -TERM -P "$pid"; kill -TERM "$pid"; done 2>/dev/null || true' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        for method in "${METHODS[@]}"; do
            train "$RUNS/$method-s$SEED" --games pong,breakout --method "$method" --seed "$SEED" \
                --branch-from "$PONG/checkpoints/after_1_pong.pt" >>"$RUNS/$method-s$SEED.log" 2>&1 &
            pids+=($!)
        done
        status=0
        for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
        trap - EXIT INT TERM
        if [ "$status" -ne 0 ]; then
            echo "error: a branch stopped with status $status; its log is $RUNS/<method>-s$SEED.log" >&2
            exit "$status"
        fi
        ;;
    evaluate)
        for method in "${METHODS[@]}"; do
            run=$RUNS/$method-s$SEED
            final=$run/checkpoints/after_2_breakout.pt
            # a finished branch, scored again whenever its eval.json is older than its last checkpoint
            if [ -f "$final" ] && [ ! "$run/eval/eval.json" -nt "$final" ]; then
                "$PYTHON" evaluate.py "$run" --device cpu >>"$run.eval.log" 2>&1
            fi
        done
        ;;
    page)
        existing=()
        for run in "$PONG" "${METHODS[@]/#/$RUNS/}"; do
            [ "$run" = "$PONG" ] || run=$run-s$SEED
            [ ! -f "$run/config.yaml" ] || existing+=("$run")
        done
        "$PYTHON" -m ewc_experiments.branch_results export "${existing[@]}" --out "$PAGE"
        "$PYTHON" -m ewc_experiments.branch_results page --out "$PAGE" --command "bash scripts/atari_cpu_experiment.sh"
        ;;
    *)
        echo "error: unknown stage $stage (pong, breakout, evaluate, page)" >&2
        exit 2
        ;;
    esac
done
