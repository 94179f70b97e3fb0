#!/usr/bin/env bash
# The figures of docs/performance.md#cpu-threads: the smoke run and evaluate.py at 1 and 2 torch threads
# (and 2 with OMP_WAIT_POLICY=PASSIVE), wall clock of each command, on the machine as it is:
#
#   bash scripts/cpu_threads.sh [BUSY_PID]
#
# With BUSY_PID (another process keeping a core busy, e.g. a training run) every command is timed
# twice: with that process paused by SIGSTOP (idle) and running (loaded); it is always continued at
# the end. Without it, once, as the machine is. Runs go to a temporary folder; PYTHON overrides the
# interpreter. Takes about 3 minutes on an idle 2-core machine, 10 with BUSY_PID.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
BUSY=${1:-}
WORK=$(mktemp -d)
unset OMP_NUM_THREADS OMP_WAIT_POLICY

# timed LABEL COMMAND...: one line, LABEL and the command's wall-clock seconds and the load average.
timed() {
    local label=$1 start end tenths
    shift
    start=$(date +%s%N)
    "$@" >"$WORK/$(echo "$label" | tr ' ,=' '___').log" 2>&1
    end=$(date +%s%N)
    tenths=$(((end - start) / 100000000))
    printf '%-50s %5d.%d s   load %s\n' "$label" $((tenths / 10)) $((tenths % 10)) "$(cut -d' ' -f1 /proc/loadavg)"
}

round() {
    local state=$1 run=$WORK/$1
    timed "$state: smoke, 1 thread" "$PYTHON" train.py --config configs/smoke.yaml --games pong,breakout --run-dir "$run-1"
    timed "$state: smoke, 2 threads" "$PYTHON" train.py --config configs/smoke.yaml --games pong,breakout --run-dir "$run-2" --threads 2
    timed "$state: smoke, 2 threads, OMP_WAIT_POLICY=PASSIVE" env OMP_WAIT_POLICY=PASSIVE \
        "$PYTHON" train.py --config configs/smoke.yaml --games pong,breakout --run-dir "$run-2p" --threads 2
    timed "$state: evaluate, 1 thread" "$PYTHON" evaluate.py "$run-1"
    timed "$state: evaluate, 2 threads" "$PYTHON" evaluate.py "$run-1" --threads 2
}

if [ -z "$BUSY" ]; then
    round "as is"
else
    trap 'kill -CONT "$BUSY"' EXIT
    kill -STOP "$BUSY"
    sleep 5
    round idle
    kill -CONT "$BUSY"
    sleep 20
    round loaded
fi
echo "runs and logs: $WORK"
