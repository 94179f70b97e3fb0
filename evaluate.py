"""Evaluate a run's game-end checkpoints on every game: the continual-learning matrix and its metrics.

    python evaluate.py runs/pong-breakout-ewc-s0
    python evaluate.py runs/ewc runs/finetune              # also prints one comparison table
    python evaluate.py runs/ewc --games all57 --episodes 30
    python evaluate.py runs/ewc --checkpoints after_2_breakout.pt --video

Each run gets <run>/eval/eval.md (also printed), eval.json, eval.csv and matrix.png. A checkpoint
that cannot be used gets one line on stderr and the others are still evaluated; the exit status
is then 1. Bad arguments exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from envs.families import family_of_run
from envs.games import parse_games
from ewc_evaluation.config import EvalConfig
from ewc_evaluation.video import check_video_support
from ewc_experiments.cli import USER_ERRORS, fail, positive_int, probability
from ewc_experiments.eval_matrix import evaluate_run, open_run
from ewc_experiments.eval_report import comparison_markdown, eval_folder, matrix_markdown, write_outputs
from ewc_training.device import resolve_device

PROTOCOL = EvalConfig()
"""Defaults of the flags: the same protocol continual evaluation uses while training."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>)")
    parser.add_argument("--games", help="comma list of games to score on (default: the run's own; all57 allowed)")
    parser.add_argument("--checkpoints", help="comma list of checkpoint files (default: every checkpoints/after_*.pt)")
    parser.add_argument(
        "--episodes", type=positive_int, default=PROTOCOL.episodes, help=f"episodes per cell (default {PROTOCOL.episodes})"
    )
    parser.add_argument(
        "--epsilon",
        type=probability,
        default=PROTOCOL.epsilon,
        help=f"exploration while scored (default {PROTOCOL.epsilon:g}, Nature DQN)",
    )
    parser.add_argument(
        "--max-episode-frames",
        type=positive_int,
        default=PROTOCOL.max_episode_frames,
        help=f"cut episodes after this many emulator frames (default {PROTOCOL.max_episode_frames:,}: "
        "30 minutes of Atari; MinAtar counts agent steps)",
    )
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when present), cuda or cpu")
    parser.add_argument("--seed", type=int, default=0, help="seeds the emulators and exploration (default 0)")
    parser.add_argument("--video", action="store_true", help="also film one episode per cell to <run>/eval/videos/")
    return parser.parse_args(argv)


def report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    protocol = EvalConfig(episodes=args.episodes, epsilon=args.epsilon, max_episode_frames=args.max_episode_frames)
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
        for run in runs:
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
