"""What train.py, evaluate.py and sweep.py share: argument types, train.py's options, and one-line errors.

A user mistake ends with one `error: ...` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import NoReturn

from agents.ewc.fisher import ESTIMATORS
from agents.ewc.methods import METHODS
from agents.network import ARCHITECTURE_FAMILY
from envs.games import parse_games
from ewc_evaluation.video import VideoError
from ewc_experiments.sequences import draw_sequence, parse_sequence_rule
from ewc_training.config import Config, ConfigError, apply_override, build_config
from ewc_training.trainer import TrainingDiverged

USER_ERRORS = (ValueError, OSError, TrainingDiverged, VideoError)
"""Errors that are the user's input or machine, reported in one line (`fail`). Every one-line error
of the project (ConfigError, UnknownGameError, DeviceError, CheckpointError, RunInUseError, RunError,
SweepError) is a ValueError; tests/test_architecture.py checks that none is missed."""

RESUME_OPTIONS = ("resume", "device", "threads")
"""The only train.py options `--resume` takes: where the run is, and where and on how many threads to run it now."""


def fail(error: BaseException) -> int:
    """Report a user error in one line; returns the exit status for it (2)."""
    print(f"error: {error}", file=sys.stderr)
    return 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one `error: ...` line and exit status 2, like every other
    user mistake here: argparse's own error() prints the whole usage first, which buries the line
    that says what was wrong (`--help` still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(float(text)) if float(text).is_integer() else None
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def seed_list(text: str | int) -> list[int]:
    """`0-3` -> [0, 1, 2, 3]; `0,5,7-8` -> [0, 5, 7, 8]; `7` -> [7]. Repeats are dropped."""
    seeds: list[int] = []
    for part in str(text).split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be seeds such as 0-3 or 0,5,7, got {text!r}") from None
        if high < low:
            raise argparse.ArgumentTypeError(f"seed range {part.strip()!r} runs backwards")
        seeds.extend(range(low, high + 1))
    return list(dict.fromkeys(seeds))


def method_list(text: str) -> list[str]:
    """`ewc,finetune` -> ["ewc", "finetune"], each one of METHODS."""
    methods = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(unknown) or text!r}; choose from {', '.join(METHODS)}")
    return methods


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text!r}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """`--threads N`: torch's CPU threads (train.py, evaluate.py, bench; ewc_training/device.py says why one)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="torch CPU threads (default: OMP_NUM_THREADS if set, else 1 on a CPU: more are slower on a busy machine)",
    )


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set SECTION.KEY=VALUE`, repeatable, into `args.overrides` (train.py and sweep.py)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def train_parser(description: str = "") -> argparse.ArgumentParser:
    """train.py's options; sweep.py parses every cell's arguments with it too."""
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", help="comma list, in training order; repeats revisit (default: pong,breakout)")
    parser.add_argument(
        "--sequence",
        metavar="random:SEGMENTS",
        help="draw the training order: SEGMENTS games from --games, each at least once, revisits allowed, "
        "seeded by --seed (the EWC paper's protocol); the order is printed and saved in run.json",
    )
    parser.add_argument("--steps-per-game", type=positive_int, help="agent steps per game (default 10,000,000)")
    parser.add_argument("--config", help="YAML preset, e.g. configs/paper.yaml")
    parser.add_argument("--device", help="auto (default: CUDA when present), cuda or cpu")
    add_threads_option(parser)
    parser.add_argument("--seed", type=int, help="fixes emulators, network initialisation and sampling")
    parser.add_argument(
        "--seeds",
        type=seed_list,
        help="several seeds, e.g. 0-3 or 0,5,7: one run (cell) each, trained together in one process (a population)",
    )
    parser.add_argument(
        "--method",
        type=method_list,
        metavar="METHOD[,METHOD...]",
        help=f"consolidation (default ewc): {', '.join(METHODS)}; several make one run (cell) each, trained together",
    )
    parser.add_argument("--ewc-lambda", type=float, help="penalty strength lambda")
    parser.add_argument("--fisher", choices=list(ESTIMATORS), help="diagonal Fisher estimator (default policy)")
    parser.add_argument("--fisher-samples", type=positive_int, help="replay states per Fisher (default 3,200)")
    parser.add_argument(
        "--run-dir", help="default runs/<games>-<method>-s<seed>-<time>; with several cells, the folder that holds theirs"
    )
    parser.add_argument("--overwrite", action="store_true", help="reuse an existing --run-dir, deleting its contents")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        nargs="+",
        help="continue runs/<name> from its newest checkpoint (or from the checkpoint file given), with its own config.yaml; "
        "several runs at the same point resume together",
    )
    parser.add_argument(
        "--branch-from",
        metavar="CHECKPOINT",
        help="start at a game-end checkpoint of another run (runs/<name>/checkpoints/after_<k>_<game>.pt) whose games "
        "begin this run's --games: the earlier games are not trained again; --method may keep the source's or be finetune",
    )
    parser.add_argument(
        "--save-replay",
        action="store_const",
        const=True,
        help="save the replay with every latest.pt so a resumed game keeps it (large: ~7 GB per million transitions)",
    )
    add_set_option(parser, "override any config key, e.g. --set agent.learning_rate=3e-4 (repeatable)")
    parser.add_argument("--list-games", action="store_true", help="print the game names and exit")
    parser.add_argument(
        "--cell",
        dest="cells",
        action="append",
        metavar="'ARGS'",
        help="one run given by its own train.py arguments, quoted (a new run or --resume RUN_DIR); repeated, the runs "
        "train together in one process (sweep.py --cells-per-process packs its cells so)",
    )
    return parser


def parse_train_args(argv: list[str] | None = None, description: str = "") -> argparse.Namespace:
    """train.py's arguments; `--resume` with options that would change the run is refused."""
    parser = train_parser(description)
    args = parser.parse_args(argv)
    if args.seed is not None and args.seeds is not None:
        parser.error("give --seed or --seeds, not both")
    if args.seeds is not None and args.branch_from:
        parser.error("a branch keeps its source's seed: --branch-from takes --seed (or none), not --seeds")
    if args.cells:
        defaults = vars(parser.parse_args([]))
        extra = [name for name, value in vars(args).items() if name not in ("cells", "threads") and value != defaults[name]]
        if extra:
            parser.error(f"--cell takes every run's arguments inside it; drop --{extra[0].replace('_', '-')}")
        for cell in args.cells:
            inner = parse_train_args(shlex.split(cell), description)
            if not shlex.split(cell) or inner.cells or inner.list_games or inner.threads:
                parser.error(f"--cell {cell!r}: one run's arguments (not empty; no --cell, --list-games or --threads inside)")
    if args.resume:
        defaults = vars(parser.parse_args([]))
        extra = [name for name, value in vars(args).items() if name not in RESUME_OPTIONS and value != defaults[name]]
        if extra:
            flags = ", ".join({"overrides": "--set"}.get(name, "--" + name.replace("_", "-")) for name in extra)
            parser.error(f"--resume continues a run with its own config.yaml; drop {flags}")
    return args


def cell_configs_from_train_args(args: argparse.Namespace) -> list[Config]:
    """One config per cell: every --method with every seed of --seeds (or --seed), in that order."""
    methods = args.method or [None]
    seeds = args.seeds or [args.seed]
    return [
        config_from_train_args(
            argparse.Namespace(**{**vars(args), "method": [method] if method else None, "seed": seed, "seeds": None})
        )
        for method in methods
        for seed in seeds
    ]


def config_from_train_args(args: argparse.Namespace) -> Config:
    """Defaults < YAML preset < shortcut flags < --set overrides; games resolved and everything validated
    (one cell: one --method, one seed)."""
    if args.method and len(args.method) > 1 or getattr(args, "seeds", None) and len(args.seeds) > 1:
        raise ConfigError("this takes one run: one --method and one --seed")
    seed = args.seeds[0] if getattr(args, "seeds", None) else args.seed
    shortcuts = {
        "run.steps_per_game": args.steps_per_game,
        "run.device": args.device,
        "run.seed": seed,
        "consolidation.method": args.method[0] if args.method else None,
        "consolidation.ewc_lambda": args.ewc_lambda,
        "consolidation.fisher": args.fisher,
        "consolidation.fisher_samples": args.fisher_samples,
        "run.save_replay": args.save_replay,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    config = build_config(args.config, overrides)
    if args.games is not None:
        config.run.games = parse_games(args.games)
    for assignment in args.overrides:  # --set has the last word, --games included
        apply_override(config, assignment)
    config.run.games = parse_games(",".join(config.run.games))
    if args.sequence is not None:
        config.run.games = draw_sequence(config.run.games, parse_sequence_rule(args.sequence), config.run.seed)
        print(f"training order ({args.sequence}, seed {config.run.seed}): {' -> '.join(config.run.games)}", file=sys.stderr)
    try:
        config.validate()
    except ConfigError as error:
        if args.config and str(error).startswith("network.architecture="):
            family = ARCHITECTURE_FAMILY[config.network.architecture]
            raise ConfigError(f"{error}; {args.config} is a preset for {family} games: name them with --games") from None
        raise
    return config
