# shellcheck shell=bash
# Shared by the scripts that run timed steps for a GPU loan and write a summary (gpu_check.sh,
# atari_showcase.sh): the output folder, the interpreter, the summary's lines and how a step ended.
# Source it from the script's own folder; the script sets DRY_RUN (0 or 1) and OUT (may be empty on
# a dry run) first.

# prepare_outdir: OUT made absolute (created unless a dry run; "OUTDIR" in a plan without one),
# SUMMARY inside it, PYTHON the interpreter (python, else python3: a CUDA image may have python3 alone).
prepare_outdir() {
    if [ "$DRY_RUN" = 1 ]; then
        OUT=${OUT:-OUTDIR}
    else
        mkdir -p "$OUT"
        OUT=$(cd "$OUT" && pwd)
    fi
    SUMMARY="$OUT/summary.md"
    PYTHON=${PYTHON:-python}
    command -v "$PYTHON" >/dev/null || PYTHON=python3
}

# note LINE: one line of the plan or the outcome, on stdout and (when running) in the summary.
note() {
    echo "$1"
    if [ "$DRY_RUN" = 0 ]; then echo "$1" >>"$SUMMARY"; fi
}

# open_summary TITLE: the summary's heading (TITLE, UTC time, commit), unless a dry run.
open_summary() {
    [ "$DRY_RUN" = 0 ] || return 0
    echo "# $1, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >"$SUMMARY"
    echo >>"$SUMMARY"
}

# outcome STATUS LIMIT: how a command run under `timeout LIMIT` ended, in words.
outcome() {
    if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then
        echo "FAILED (over its $2 s limit)"
    elif [ "$1" -ne 0 ]; then
        echo "FAILED (exit $1)"
    else
        echo "ok"
    fi
}
