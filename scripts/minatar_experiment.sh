#!/usr/bin/env bash
# The MinAtar experiment behind docs/results/minatar.md, in one command that resumes:
#
#   bash scripts/minatar_experiment.sh [SWEEP_ROOT [STAGE ...]]    # SWEEP_ROOT defaults to sweeps/minatar
#
# configs/minatar.yaml (150,000 agent steps per game, 64 evaluation episodes per final checkpoint).
# Three kinds of seeds, never mixed:
#   reference seeds 1000-1004   single-game runs of all five games: the normalisation references
#                               (envs/games.py MINATAR_REFERENCE_SCORES) and the single-game curves
#   selection seeds 100-101     the lambda grids; the criterion, fixed in advance, is the final mean
#                               normalised score over both two-game orders
#   held-out seeds 0-9          the reported comparison, at the chosen lambda
# Stages, in order (name some to run only those):
#   references  5 games x 5 reference seeds, one game each
#   select-ewc  EWC, lambda 10 .. 100,000 (5 values, 4 decades), selection seeds, both orders; a
#               chosen lambda at an edge of the grid extends it by a decade and sweeps again
#   headline    fine-tuning and EWC at its chosen lambda, held-out seeds, both orders
#   three-game  breakout -> space_invaders -> asterix: fine-tuning, EWC and online EWC at EWC's
#               chosen lambda (online EWC differs from EWC only from a third game on), held-out seeds;
#               then asterix -> space_invaders -> breakout, fine-tuning and EWC, a sequence in which all
#               three games learn: of the orders tried, asterix learned within 150,000 steps only as the
#               first game (as the third, 0.01-0.11 of its single-game score). The order was chosen in a
#               one-off pilot (not kept) on selection seed 100, with fine-tuning, by each game's
#               normalised score right after its own training (asterix, space_invaders, breakout 1.01,
#               0.76, 0.78; asterix -> breakout -> space_invaders 1.01, 0.72, 0.49; space_invaders ->
#               breakout -> asterix 0.79, 1.09, 0.01)
#   modulated   EWC with per-game biases and gains (network.per_game_modulation, as the EWC paper's
#               Atari agent) at EWC's chosen lambda, and fine-tuning with them (their control: what
#               the per-game parameters give alone), held-out seeds, both orders
#   l2          L2's own selection (lambda 0.001 .. 10) and then L2 at its lambda, held-out seeds, both orders
#   page        docs/results/minatar.md from the saved cells of every stage (the lambda section from the
#               selection sweeps alone)
# The chosen lambda is kept in docs/results/minatar/chosen_lambda_<method>.txt once made, so that
# later cells never move it. Each stage makes sweep.py calls into its sweep directories
# (SWEEP_ROOT/<kind>); after each the evaluated cells' compact results are saved under
# docs/results/minatar/<kind>/cells/ (commit them), and a later run restores them as evaluated, so
# the experiment can span several sittings. A cell killed mid-game resumes without its replay (it
# refills it, and learning pauses meanwhile); the page lists such cells: delete one's directory in the
# sweep and its files in docs/results/minatar/<kind>/cells/ to train it again uninterrupted. A stage with
# a failed cell stops the script (sweep.py's report in the sweep directory names it). PYTHON overrides
# the interpreter.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
ROOT=${1:-sweeps/minatar}
shift || true
ALL_STAGES=(references select-ewc headline three-game modulated l2 page)
case " ${ALL_STAGES[*]} " in
# a stage named first would be taken for the sweep root, and every stage would start training in it
*" $ROOT "*)
    echo "error: $ROOT is a stage; name the sweep root first: bash scripts/minatar_experiment.sh sweeps/minatar $ROOT" >&2
    exit 2
    ;;
esac
PYTHON=${PYTHON:-python}
RESULTS=docs/results/minatar
PAIR=minatar:breakout,minatar:space_invaders
TRIPLE=minatar:breakout,minatar:space_invaders,minatar:asterix
TRIPLE_ALL_LEARN=minatar:asterix,minatar:space_invaders,minatar:breakout
ALL_GAMES=(breakout space_invaders asterix freeway seaquest)
REFERENCE_SEEDS=1000,1001,1002,1003,1004
SELECTION_SEEDS=100,101
# the held-out comparisons run their seeds 0-9 two at a time, every method of a comparison in one
# sweep.py call, so that a sitting that ends early leaves complete pairs (the same seed with and
# without EWC) rather than one method alone
HELD_OUT_SEED_BLOCKS=("0,1" "2,3" "4,5" "6,7" "8,9")
EWC_GRID=10,100,1000,10000,100000
L2_GRID=0.001,0.01,0.1,1,10
export OMP_NUM_THREADS=1  # torch's threads waiting on each other are many times slower on a shared CPU

# sweep KIND GAMES SWEEP_ARGS...: one sweep.py call into ROOT/KIND, then its evaluated cells saved
# into RESULTS/KIND/cells. Cells saved earlier are restored first, so they are never trained twice.
sweep() {
    local kind=$1 games=$2 status=0
    shift 2
    local dir="$ROOT/$kind" saved="$RESULTS/$kind"
    if [ -d "$saved/cells" ]; then
        "$PYTHON" -m ewc_experiments.results_page "$saved/cells" --restore-into "$dir"
    fi
    echo "== $kind: sweep.py --games $games $*" >&2
    "$PYTHON" sweep.py --games "$games" --config configs/minatar.yaml --sweep-dir "$dir" "$@" || status=$?
    "$PYTHON" -m ewc_experiments.results_page "$dir" --out "$saved.md" --export-only ||
        echo "$kind: could not save the cells' results into $saved/cells (above)" >&2
    if [ "$status" -ne 0 ]; then
        echo "$kind did not finish (sweep.py exit $status): see $dir/report.md; run this script again to continue" >&2
        exit "$status"
    fi
}

# chosen METHOD: the lambda chosen from METHOD's selection sweep, read back once it is kept.
chosen() {
    local file="$RESULTS/chosen_lambda_$1.txt"
    if [ ! -s "$file" ]; then
        echo "no lambda chosen for $1 yet ($file): run the select-$1 stage first" >&2
        exit 1
    fi
    cat "$file"
}

# select_lambda METHOD GRID: METHOD's selection sweep over GRID on the selection seeds in both orders, its
# lambda chosen by the final mean normalised score (pooled over orders and seeds) and kept. A lambda
# at an edge of the grid is no choice: the grid grows by a decade past that edge, up to three times.
# The grid swept so far is kept in RESULTS/select_grid_METHOD.txt, so that a run stopped during an
# extension goes on with the extended grid.
select_lambda() {
    local method=$1 file="$RESULTS/chosen_lambda_$1.txt" grid_file="$RESULTS/select_grid_$1.txt"
    local grid=$2 value wider extensions=0
    [ -s "$file" ] && return 0
    [ -s "$grid_file" ] && grid=$(cat "$grid_file")
    while true; do
        mkdir -p "$RESULTS" && echo "$grid" >"$grid_file"
        sweep "select-$method" "$PAIR" --methods "$method" --ewc-lambda "$grid" --seeds "$SELECTION_SEEDS" --orders both
        # normalised scores need the independent references in envs/games.py first
        "$PYTHON" -m ewc_experiments.results_page "$RESULTS/references/cells" --check-references
        value=$("$PYTHON" -m ewc_experiments.results_page "$ROOT/select-$method" --choose-lambda "$method")
        wider=$("$PYTHON" -c 'import sys
grid = sorted(float(x) for x in sys.argv[1].split(","))
value = float(sys.argv[2])
edge = [grid[0] / 10] if value <= grid[0] else [grid[-1] * 10] if value >= grid[-1] else []
print(",".join(f"{x:.10g}" for x in sorted(edge + grid)) if edge else "")' "$grid" "$value")
        if [ -z "$wider" ]; then
            echo "$value" >"$file.tmp" && mv "$file.tmp" "$file"
            echo "== chose $method lambda $value inside the grid $grid (kept in $file)" >&2
            return 0
        fi
        if [ "$extensions" -eq 3 ]; then
            echo "$method: lambda $value still lies at an edge of $grid after three extensions; choose by hand" >&2
            exit 1
        fi
        extensions=$((extensions + 1))
        echo "== $method lambda $value lies at an edge of $grid: extending to $wider" >&2
        grid=$wider
    done
}

stage_references() {
    local game
    for game in "${ALL_GAMES[@]}"; do
        sweep "references" "minatar:$game" --methods finetune --seeds "$REFERENCE_SEEDS"
    done
}

stage_select_ewc() {
    select_lambda ewc "$EWC_GRID"
}

# $(chosen ...) as an argument would not stop the script when nothing is chosen: assign it first.
stage_headline() {
    local lambda seeds
    lambda=$(chosen ewc)
    for seeds in "${HELD_OUT_SEED_BLOCKS[@]}"; do
        sweep "headline" "$PAIR" --methods finetune,ewc --ewc-lambda "$lambda" --seeds "$seeds" --orders both
    done
}

stage_three_game() {
    local lambda seeds
    lambda=$(chosen ewc)
    for seeds in "${HELD_OUT_SEED_BLOCKS[@]}"; do
        sweep "three-game" "$TRIPLE" --methods finetune,ewc,online-ewc --ewc-lambda "$lambda" --seeds "$seeds"
    done
    for seeds in "${HELD_OUT_SEED_BLOCKS[@]}"; do
        sweep "three-game-all-learn" "$TRIPLE_ALL_LEARN" --methods finetune,ewc --ewc-lambda "$lambda" --seeds "$seeds"
    done
}

stage_modulated() {
    local lambda seeds
    lambda=$(chosen ewc)
    for seeds in "${HELD_OUT_SEED_BLOCKS[@]}"; do
        sweep "headline" "$PAIR" --methods ewc-modulated,finetune-modulated --ewc-lambda "$lambda" --seeds "$seeds" --orders both
    done
}

stage_l2() {
    local lambda seeds
    select_lambda l2 "$L2_GRID"
    lambda=$(chosen l2)
    for seeds in "${HELD_OUT_SEED_BLOCKS[@]}"; do
        sweep "headline" "$PAIR" --methods l2 --ewc-lambda "$lambda" --seeds "$seeds" --orders both
    done
}

stage_page() {
    local more=() kind
    for kind in three-game three-game-all-learn references; do
        [ -d "$RESULTS/$kind/cells" ] && more+=(--also "$RESULTS/$kind/cells")
    done
    for kind in select-ewc select-l2; do
        [ -d "$RESULTS/$kind/cells" ] && more+=(--selection "$RESULTS/$kind/cells")
    done
    "$PYTHON" -m ewc_experiments.results_page "$RESULTS/headline/cells" "${more[@]}" --out "$RESULTS.md" --main-order "$PAIR"
}

STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=("${ALL_STAGES[@]}")
for stage in "${STAGES[@]}"; do
    case " ${ALL_STAGES[*]} " in
        *" $stage "*) "stage_${stage//-/_}" ;;
        *) echo "unknown stage $stage: one of ${ALL_STAGES[*]}" >&2 && exit 2 ;;
    esac
done
echo "== done: ${STAGES[*]}" >&2
