"""Train one DQN agent on a sequence of Atari games, consolidating each before the next.

    python train.py --games pong,breakout
    python train.py --games pong,breakout,pong --method online-ewc --ewc-lambda 1000 --seed 1
    python train.py --config configs/smoke.yaml --set agent.learning_rate=3e-4

Every option is a config key (config.py); flags here are shortcuts for the common ones and
`--set section.key=value` reaches the rest. Precedence: defaults < --config YAML < flags < --set.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from agents import run_dir as paths
from agents.checkpoint import CheckpointError
from agents.consolidation import METHODS
from agents.device import DeviceError, resolve_device
from agents.fisher import ESTIMATORS
from agents.training import SequenceTrainer, TrainingDiverged
from config import Config, ConfigError, build_config
from envs.games import UnknownGameError, available_games, parse_games

USER_ERRORS = (ConfigError, UnknownGameError, DeviceError, CheckpointError, TrainingDiverged, ValueError, OSError)


def positive_int(text: str) -> int:
    try:
        value = int(float(text)) if float(text).is_integer() else None
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", help="comma list, in training order; repeats revisit (default: pong,breakout)")
    parser.add_argument("--steps-per-game", type=positive_int, help="agent steps per game (default 10,000,000)")
    parser.add_argument("--config", help="YAML preset, e.g. configs/paper.yaml")
    parser.add_argument("--device", help="auto (default: CUDA when present), cuda or cpu")
    parser.add_argument("--seed", type=int, help="fixes emulators, network initialisation and sampling")
    parser.add_argument("--method", choices=METHODS, help="consolidation (default ewc)")
    parser.add_argument("--ewc-lambda", type=float, help="penalty strength lambda")
    parser.add_argument("--fisher", choices=ESTIMATORS, help="diagonal Fisher estimator (default policy)")
    parser.add_argument("--fisher-samples", type=positive_int, help="replay states per Fisher (default 3,200)")
    parser.add_argument("--run-dir", help="default runs/<games>-<method>-s<seed>-<time>")
    parser.add_argument("--overwrite", action="store_true", help="reuse an existing --run-dir, deleting its contents")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key, e.g. --set agent.learning_rate=3e-4 (repeatable)")
    parser.add_argument("--list-games", action="store_true", help="print the game names and exit")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults < YAML preset < shortcut flags < --set overrides; games are validated here."""
    shortcuts = {
        "run.steps_per_game": args.steps_per_game, "run.device": args.device, "run.seed": args.seed,
        "consolidation.method": args.method, "consolidation.ewc_lambda": args.ewc_lambda,
        "consolidation.fisher": args.fisher, "consolidation.fisher_samples": args.fisher_samples,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    config = build_config(args.config, overrides + args.overrides)
    if args.games is not None:
        config.run.games = parse_games(args.games)
    else:
        config.run.games = parse_games(",".join(config.run.games))
    validate(config)
    return config


def validate(config: Config) -> None:
    """Reject settings that would fail later (after an hour of training), with the key named."""
    checks = [
        (config.run.steps_per_game > 0, "run.steps_per_game must be positive"),
        (config.env.num_envs > 0, "env.num_envs must be positive"),
        (config.agent.batch_size > 0, "agent.batch_size must be positive"),
        (config.agent.steps_per_update > 0, "agent.steps_per_update must be positive"),
        (config.agent.target_update_every > 0, "agent.target_update_every must be positive"),
        (config.consolidation.method in METHODS, f"consolidation.method must be one of {', '.join(METHODS)}"),
        (config.consolidation.fisher in ESTIMATORS, f"consolidation.fisher must be one of {', '.join(ESTIMATORS)}"),
        (config.consolidation.ewc_lambda >= 0, "consolidation.ewc_lambda must be >= 0"),
        (config.agent.optimizer in ("adam", "rmsprop"), "agent.optimizer must be adam or rmsprop"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def prepare_run_dir(config: Config, requested: str | None, overwrite: bool) -> Path:
    """The run directory, refusing to mix a new run into an existing one unless --overwrite."""
    run_dir = Path(requested) if requested else Path("runs") / paths.default_run_name(config)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"run directory {run_dir} already exists; pass --overwrite to replace it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write-test"
    probe.write_text("")
    probe.unlink()
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_games:
        print("\n".join(available_games()))
        return 0
    try:
        config = resolve_config(args)
        device = resolve_device(config.run.device)
        run_dir = prepare_run_dir(config, args.run_dir, args.overwrite)
        print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir.parent})", file=sys.stderr)
        SequenceTrainer(config, run_dir, device).run()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
