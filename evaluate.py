"""Evaluate a run's game-end checkpoints on every game: the continual-learning matrix and its metrics.

    python evaluate.py runs/pong-breakout-ewc-s0
    python evaluate.py runs/ewc runs/finetune              # also prints one comparison table
    python evaluate.py runs/ewc --games all57 --episodes 30
    python evaluate.py runs/ewc --checkpoints after_2_breakout.pt --video

Each run is scored with the protocol its training-time evaluation used, read from its config.yaml
(eval.episodes, eval.epsilon, eval.max_episode_frames; the env section's sticky actions, no-ops
and MinAtar difficulty ramping): a flag replaces one of the first three for every run given, the
rest are always the run's. Runs given together are each scored with their own protocol; the
comparison table then says when those differ. The protocol used, and where each setting came
from (run config or flag), is printed before scoring and saved in eval.md and eval.json.

Each run gets <run>/eval/eval.md (also printed), eval.json, eval.csv and matrix.png. A checkpoint
that cannot be used gets one line on stderr and the others are still evaluated; the exit status
is then 1. Bad arguments exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from envs.families import family_of_run
from envs.games import parse_games
from ewc_evaluation.video import check_video_support
from ewc_experiments.cli import USER_ERRORS, OneLineParser, add_threads_option, fail, positive_int, probability
from ewc_experiments.eval_matrix import PROTOCOL_FLAGS, evaluate_run, open_run, run_protocol
from ewc_experiments.eval_report import (
    comparison_markdown,
    eval_folder,
    matrix_markdown,
    protocol_caveat,
    protocol_text,
    write_outputs,
)
from ewc_training.device import configure_threads, resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The protocol flags default to None: each run is then scored as its config.yaml says."""
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>)")
    parser.add_argument("--games", help="comma list of games to score on (default: the run's own; all57 allowed)")
    parser.add_argument("--checkpoints", help="comma list of checkpoint files (default: every checkpoints/after_*.pt)")
    parser.add_argument("--episodes", type=positive_int, help="episodes per cell (default: the run's eval.episodes)")
    parser.add_argument("--epsilon", type=probability, help="exploration while scored (default: the run's eval.epsilon)")
    parser.add_argument(
        "--max-episode-frames",
        type=positive_int,
        help="cut episodes after this many emulator frames; MinAtar counts agent steps (default: the run's "
        "eval.max_episode_frames)",
    )
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when present), cuda or cpu")
    add_threads_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="seeds the emulators and exploration (default 0)")
    parser.add_argument("--video", action="store_true", help="also film one episode per cell to <run>/eval/videos/")
    return parser.parse_args(argv)


def report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = {name: getattr(args, name) for name in PROTOCOL_FLAGS}
    try:
        device = resolve_device(args.device, warn=False)
        picked = args.checkpoints.split(",") if args.checkpoints else None
        runs = [open_run(path, picked) for path in args.runs]
        games = list(dict.fromkeys(parse_games(args.games))) if args.games else None
        for run in runs:
            family_of_run(run.sequence + (games or []))  # one network reads one family's games
        if args.video:
            check_video_support(games or [game for run in runs for game in run.sequence])
        evaluations = []
        protocols = [run_protocol(run, flags) for run in runs]  # every run checked before any is scored
        report(configure_threads(args.threads, device))
        for run, protocol in zip(runs, protocols):
            report(f"{run.path}: {protocol_text(run, protocol, args.seed)}")
            if caveat := protocol_caveat(run, protocol):
                report(caveat)
            video_dir = eval_folder(run.path) / "videos" if args.video else None
            evaluation = evaluate_run(run, games or run.sequence, protocol, device, args.seed, video_dir, report)
            if evaluation.rows:
                report(f"wrote {write_outputs(evaluation)}/")
                print(matrix_markdown(evaluation))
            else:
                report(f"error: {run.path}: no checkpoint could be evaluated")
            evaluations.append(evaluation)
        if len(evaluations) > 1:
            print(comparison_markdown([evaluation for evaluation in evaluations if evaluation.rows]))
    except USER_ERRORS as error:
        return fail(error)
    except KeyboardInterrupt:
        report("interrupted")
        return 130
    failed = any(evaluation.errors or not evaluation.rows for evaluation in evaluations)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
