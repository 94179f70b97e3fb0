#!/usr/bin/env bash
# Forgetting on Atari in one short GPU loan: Pong trained once, then branched at its end into Breakout
# with EWC and with plain fine-tuning at the same time on one GPU (same seed, configs/atari-short.yaml,
# `train.py --branch-from`: both go on from the same Pong network), then both scored by evaluate.py and
# compared in one table: Pong after game 1, Pong after game 2 (what each method kept) and Breakout
# after game 2. Four steps, each under its own time limit; the limits add up to 665 s (685 s if every
# step also used the 5 s it is given to stop after its limit). Pong gets SHOWCASE_PONG_STEPS agent
# steps (default 1,000,000, where this recipe's Pong plays: ~300 s alone on an H200 at ~3,300 agent
# steps/s), Breakout the preset's 300,000 (two runs side by side: ~1,950 agent steps/s each there).
#
#   scripts/atari_showcase.sh OUTDIR [TRAIN_OPTION ...]          # TRAIN_OPTIONs go to every train.py run
#   scripts/atari_showcase.sh --dry-run [OUTDIR] [TRAIN_OPTION ...] # print the plan; runs and writes nothing
#
# OUTDIR gets seven flat files: summary.md (the plan, how each command ended, the table), table.md,
# train-pong.log, train-ewc.log, train-finetune.log, eval-ewc.log and eval-finetune.log. The run
# directories go to $SHOWCASE_RUNS/{pong,ewc,finetune} (default runs/showcase), outside OUTDIR.
# SHOWCASE_DEVICE (default cuda) is the runs' and the evaluation's device; PYTHON overrides the
# interpreter. The evaluation is each run's own protocol (the preset's eval section: 8 episodes,
# epsilon 0.05). A CPU check of the machinery, in about a minute (a --steps-per-game among the
# TRAIN_OPTIONs sets Pong's steps too):
#
#   SHOWCASE_DEVICE=cpu scripts/atari_showcase.sh /tmp/showcase --steps-per-game 128 --set env.num_envs=4 \
#       --set agent.learning_starts=64 --set consolidation.fisher_samples=32 --set eval.episodes=1 \
#       --set eval.max_episode_frames=200
#
# A run that is not done at its limit is stopped; the table then shows what was saved (n/a for the
# rest). The script exits non-zero when any command failed.
set -euo pipefail

usage() {
    echo "usage: $0 OUTDIR [TRAIN_OPTION ...] | $0 --dry-run [OUTDIR] [TRAIN_OPTION ...]" >&2
    exit 2
}
DRY_RUN=0
OUT=
TRAIN_OPTIONS=()
for argument in "$@"; do
    if [ "$argument" = --dry-run ]; then
        DRY_RUN=1
    elif [ -z "$OUT" ] && [ ${#TRAIN_OPTIONS[@]} -eq 0 ] && [ "${argument:0:1}" != - ]; then
        OUT=$argument
    else
        TRAIN_OPTIONS+=("$argument")
    fi
done
[ -n "$OUT" ] || [ "$DRY_RUN" = 1 ] || usage
# shellcheck source-path=SCRIPTDIR source=lib/timed_steps.sh
source "$(dirname "$0")/lib/timed_steps.sh"
prepare_outdir
cd "$(dirname "$0")/.."
RUNS=${SHOWCASE_RUNS:-runs/showcase}
DEVICE=${SHOWCASE_DEVICE:-cuda}
PONG_STEPS=${SHOWCASE_PONG_STEPS:-1000000}
METHODS=(ewc finetune)
KILL_AFTER=5
failed=0
total=0

# begin NAME SECONDS: a step; the commands `launch` starts next run at the same time, under its limit.
begin() {
    step_limit=$2
    total=$((total + step_limit))
    note "== $1 [limit $step_limit s]"
    step_started=$SECONDS
    pids=()
    logs=()
}

# launch LOG COMMAND...: print COMMAND; unless a dry run, start it in the background, output into LOG.
launch() {
    local log=$1
    shift
    note "   \$ $* > $log"
    [ "$DRY_RUN" = 0 ] || return 0
    timeout --kill-after=$KILL_AFTER "$step_limit" "$@" >"$log" 2>&1 <&0 &
    pids+=($!)
    logs+=("$log")
}

# finish: wait for the step's commands and note how each ended.
finish() {
    [ "$DRY_RUN" = 0 ] || return 0
    local index status
    for index in "${!pids[@]}"; do
        status=0
        wait "${pids[$index]}" || status=$?
        [ "$status" -eq 0 ] || failed=$((failed + 1))
        note "   $(outcome "$status" "$step_limit"): ${logs[$index]}"
    done
    note "   step done in $((SECONDS - step_started)) s"
}

open_summary "Atari forgetting showcase"
begin "train pong once (EWC's Fisher of Pong at its end)" 360
launch "$OUT/train-pong.log" "$PYTHON" train.py --config configs/atari-short.yaml --games pong \
    --steps-per-game "$PONG_STEPS" --seed 0 --device "$DEVICE" --run-dir "$RUNS/pong" --overwrite "${TRAIN_OPTIONS[@]}"
finish
begin "branch each method into breakout from pong's end, at the same time" 200
for method in "${METHODS[@]}"; do
    launch "$OUT/train-$method.log" "$PYTHON" train.py --config configs/atari-short.yaml --games pong,breakout \
        --method "$method" --seed 0 --device "$DEVICE" --branch-from "$RUNS/pong/checkpoints/after_1_pong.pt" \
        --run-dir "$RUNS/$method" --overwrite "${TRAIN_OPTIONS[@]}"
done
finish
begin "evaluate both runs, at the same time" 90
for method in "${METHODS[@]}"; do
    launch "$OUT/eval-$method.log" "$PYTHON" evaluate.py "$RUNS/$method" --seed 0 --device "$DEVICE"
done
finish
begin "the table" 15
launch "$OUT/table.md" "$PYTHON" - "${METHODS[@]/#/$RUNS/}" <<'PY'
# Pong after game 1, Pong after game 2 and Breakout after game 2, per method, from each run's eval.json.
import json
import sys
from pathlib import Path

COLUMNS = ((1, "pong"), (2, "pong"), (2, "breakout"))


def cell(evaluation: dict, games_done: int, game: str) -> str:
    """Mean ± std of the raw episode scores (and the mean HNS) of a game-end checkpoint on a game."""
    for row in evaluation["rows"]:
        if row["games_done"] == games_done and row["step_in_game"] == 0 and game in row["cells"]:
            scores = row["cells"][game]
            hns = "" if scores["hns_mean"] is None else f" (HNS {scores['hns_mean']:.2f})"
            return f"{scores['score_mean']:.1f} ± {scores['score_std']:.1f}{hns}"
    return "n/a"


lines = ["| method | Pong after game 1 | Pong after game 2 | Breakout after game 2 |", "|---|---|---|---|"]
episodes = set()
for run in map(Path, sys.argv[1:]):
    try:
        evaluation = json.loads((run / "eval" / "eval.json").read_text())
    except (OSError, ValueError):
        lines.append(f"| {run.name} (not evaluated) | n/a | n/a | n/a |")
        continue
    episodes.add(evaluation["protocol"]["episodes"])
    lines.append(f"| {evaluation['method']} | " + " | ".join(cell(evaluation, *column) for column in COLUMNS) + " |")
print("\n".join(lines))
print(f"\nRaw score, mean ± std over a cell's evaluation episodes ({' or '.join(map(str, sorted(episodes))) or 'none'}).")
sys.exit(0 if all("n/a" not in line for line in lines) else 1)
PY
finish

note ""
note "time limits: $total s in all ($((total + 4 * KILL_AFTER)) s if every step also used its $KILL_AFTER s to stop)"
if [ "$DRY_RUN" = 1 ]; then
    exit 0
fi
{
    echo
    cat "$OUT/table.md"
} | tee -a "$SUMMARY"
echo "$failed command(s) failed; summary: $SUMMARY" | tee -a "$SUMMARY"
[ "$failed" -eq 0 ]
