#!/usr/bin/env bash
# The whole MinAtar experiment behind docs/results/minatar.md, in one command:
#
#   bash scripts/minatar_experiment.sh [SWEEP_DIR]        # SWEEP_DIR defaults to sweeps/minatar
#
# minatar:breakout -> minatar:space_invaders (the main order) and its reverse, configs/minatar.yaml
# (60,000 agent steps per game), in stages, each a sweep.py call into the same SWEEP_DIR:
#   A1 fine-tuning, seeds 0-4                     A2 EWC lambda sweep 100, 1000, 10000 (seed 0)
#      -> the EWC lambda: the highest final mean normalised score of A2 (results_page --choose-lambda)
#   B1 EWC at that lambda, seeds 0-4              B2 fine-tuning, seeds 0-2, both orders
#   B4-ewc EWC at its lambda, seeds 0-2, both orders (the headline comparison first, in both orders)
#   A3 L2 lambda sweep 0.01, 0.1, 1 (seed 0)      -> the L2 lambda, chosen the same way
#   B3 L2 at its lambda, seeds 0-2                B4-l2 L2 at its lambda, seeds 0-2, both orders
#   B5 online EWC at EWC's lambda, seeds 0-2, both orders: with two games online EWC is EWC (after
#      game 1 both hold the same F and anchor; they differ only from a third game on), which B5 shows
# then the page: python -m ewc_experiments.results_page SWEEP_DIR --out docs/results/minatar.md
#
# Running it again continues where it stopped: sweep.py skips evaluated cells and resumes interrupted
# ones, cells whose results were committed (docs/results/minatar/cells/) are restored as evaluated, and a
# chosen lambda is kept in docs/results/minatar/chosen_lambda_<method>.txt, so that later cells (which
# can change the normalisation references) never move it. After every stage the evaluated cells'
# compact results are saved into docs/results/minatar/cells/. A stage with a failed cell stops the
# script (sweep.py's report in SWEEP_DIR/report.md names it). PYTHON overrides the interpreter.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
SWEEP=${1:-sweeps/minatar}
PYTHON=${PYTHON:-python}
GAMES=minatar:breakout,minatar:space_invaders
PAGE=docs/results/minatar.md
export OMP_NUM_THREADS=1  # torch's threads waiting on each other are many times slower on a shared CPU

# stage NAME SWEEP_ARGS...: one sweep.py call, then the evaluated cells saved beside the page.
stage() {
    local name=$1 status=0
    shift
    echo "== $name: sweep.py $*" >&2
    "$PYTHON" sweep.py --games "$GAMES" --config configs/minatar.yaml --sweep-dir "$SWEEP" "$@" || status=$?
    "$PYTHON" -m ewc_experiments.results_page "$SWEEP" --out "$PAGE" --export-only ||
        echo "stage $name: could not save the cells' results into ${PAGE%.md}/cells (above)" >&2
    if [ "$status" -ne 0 ]; then
        echo "stage $name did not finish (sweep.py exit $status): see $SWEEP/report.md; run this script again to continue" >&2
        exit "$status"
    fi
}

# chosen METHOD: the lambda of METHOD's lambda sweep, chosen once and then read back.
chosen() {
    local file="${PAGE%.md}/chosen_lambda_$1.txt"
    if [ ! -s "$file" ]; then
        "$PYTHON" -m ewc_experiments.results_page "$SWEEP" --choose-lambda "$1" --main-order "$GAMES" >"$file.tmp"
        mv "$file.tmp" "$file"
        echo "== chose $1 lambda $(cat "$file") (kept in $file)" >&2
    fi
    cat "$file"
}

# Cells saved by an earlier session (committed beside the page) count as evaluated: never trained twice.
if [ -d "${PAGE%.md}/cells" ]; then
    "$PYTHON" -m ewc_experiments.results_page "${PAGE%.md}/cells" --restore-into "$SWEEP"
fi

stage A1 --methods finetune --seeds 0,1,2,3,4
stage A2 --methods ewc --ewc-lambda 100,1000,10000 --seeds 0
EWC_LAMBDA=$(chosen ewc)
stage B1 --methods ewc --ewc-lambda "$EWC_LAMBDA" --seeds 0,1,2,3,4
stage B2 --methods finetune --seeds 0,1,2 --orders both
stage B4-ewc --methods ewc --ewc-lambda "$EWC_LAMBDA" --seeds 0,1,2 --orders both
# The chosen EWC lambda was the largest of A2's grid: one step further up, seed 0, to see past the edge
# (the choice above is made from A2's grid alone, as it was when the page's cells were trained).
stage A2-edge --methods ewc --ewc-lambda 100000 --seeds 0
stage A3 --methods l2 --ewc-lambda 0.01,0.1,1 --seeds 0
L2_LAMBDA=$(chosen l2)
stage B3 --methods l2 --ewc-lambda "$L2_LAMBDA" --seeds 0,1,2
stage B4-l2 --methods l2 --ewc-lambda "$L2_LAMBDA" --seeds 0,1,2 --orders both
stage B5 --methods online-ewc --ewc-lambda "$EWC_LAMBDA" --seeds 0,1,2 --orders both

"$PYTHON" -m ewc_experiments.results_page "$SWEEP" --out "$PAGE" --main-order "$GAMES"
echo "== done: $PAGE" >&2
