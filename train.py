"""Train one DQN agent on a sequence of Atari games, consolidating each before the next.

    python train.py --games pong,breakout
    python train.py --games pong,breakout,pong --method online-ewc --ewc-lambda 1000 --seed 1
    python train.py --config configs/smoke.yaml --set agent.learning_rate=3e-4
    python train.py --resume runs/<name>

Every option is a config key (config.py); flags here are shortcuts for the common ones and
`--set section.key=value` reaches the rest. Precedence: defaults < --config YAML < flags < --set.
A resumed run takes its own config.yaml. Ctrl-C (SIGINT) or SIGTERM stops after the current update
with checkpoints/latest.pt written and the resume command printed; the exit status is then 128 +
the signal number (130, 143). Bad input ends with one `error:` line and status 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import torch

from agents import run_dir as paths
from agents.checkpoint import CheckpointError
from agents.consolidation import METHODS
from agents.device import DeviceError, free_memory_bytes, resolve_device
from agents.fisher import ESTIMATORS
from agents.replay import replay_bytes
from agents.training import SequenceTrainer, TrainingDiverged, TrainingInterrupted, replay_capacity
from config import Config, ConfigError, apply_override, build_config
from envs.games import UnknownGameError, available_games, parse_games

USER_ERRORS = (ConfigError, UnknownGameError, DeviceError, CheckpointError, TrainingDiverged, ValueError, OSError)
RESUME_OPTIONS = ("resume", "device")
"""The only options `--resume` takes: where the run is, and where to run it now."""
MEMORY_RESERVE = 1 << 30
"""Bytes kept free beside the replay for the networks, optimizer, consolidation and emulators."""


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
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue runs/<name> from its newest checkpoint "
                        "(or from the checkpoint file given), with its own config.yaml")
    parser.add_argument("--save-replay", action="store_const", const=True, help="save the replay with every "
                        "latest.pt so a resumed game keeps it (large: ~7 GB per million transitions)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key, e.g. --set agent.learning_rate=3e-4 (repeatable)")
    parser.add_argument("--list-games", action="store_true", help="print the game names and exit")
    args = parser.parse_args(argv)
    if args.resume:
        defaults = vars(parser.parse_args([]))
        extra = [name for name, value in vars(args).items() if name not in RESUME_OPTIONS and value != defaults[name]]
        if extra:
            flags = ", ".join({"overrides": "--set"}.get(name, "--" + name.replace("_", "-")) for name in extra)
            parser.error(f"--resume continues a run with its own config.yaml; drop {flags}")
    return args


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults < YAML preset < shortcut flags < --set overrides; games are validated here."""
    shortcuts = {
        "run.steps_per_game": args.steps_per_game, "run.device": args.device, "run.seed": args.seed,
        "consolidation.method": args.method, "consolidation.ewc_lambda": args.ewc_lambda,
        "consolidation.fisher": args.fisher, "consolidation.fisher_samples": args.fisher_samples,
        "run.save_replay": args.save_replay,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    config = build_config(args.config, overrides)
    if args.games is not None:
        config.run.games = parse_games(args.games)
    for assignment in args.overrides:  # --set has the last word, --games included
        apply_override(config, assignment)
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
        (config.agent.learning_rate > 0, "agent.learning_rate must be positive"),
        (0 <= config.agent.gamma <= 1, "agent.gamma must be in [0, 1]"),
        (0 <= config.agent.epsilon_end <= 1 and 0 <= config.agent.epsilon_start <= 1,
         "agent.epsilon_start and agent.epsilon_end must be in [0, 1]"),
        (config.agent.replay_capacity >= 6 * config.env.num_envs,
         f"agent.replay_capacity must be at least 6 x env.num_envs = {6 * config.env.num_envs}"),
        (config.env.max_episode_frames >= 100, "env.max_episode_frames must be at least 100 (25 agent steps)"),
        (0 <= config.run.seed < 2**31, "run.seed must be in [0, 2^31)"),
        (config.consolidation.fisher_samples > 0, "consolidation.fisher_samples must be positive"),
        (config.consolidation.fisher_batch_size > 0, "consolidation.fisher_batch_size must be positive"),
        (config.consolidation.policy_temperature > 0, "consolidation.policy_temperature must be positive"),
        (0 <= config.consolidation.online_gamma <= 1, "consolidation.online_gamma must be in [0, 1]"),
        (config.consolidation.probe_states >= 0, "consolidation.probe_states must be >= 0"),
        (config.eval.eval_every == 0 or config.eval.episodes > 0, "eval.episodes must be positive when eval.eval_every > 0"),
        (0 <= config.eval.epsilon <= 1, "eval.epsilon must be in [0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def check_replay_fits(config: Config, device: torch.device) -> None:
    """Refuse, before anything is allocated, a replay the device (or, to save it, the host) cannot hold."""
    capacity = replay_capacity(config)
    needed = replay_bytes(capacity)
    places = [device] + ([torch.device("cpu")] if config.run.save_replay and device.type == "cuda" else [])
    for place in places:
        free = free_memory_bytes(place)
        if free is None or needed + MEMORY_RESERVE <= free:
            continue
        fitting = max(0, free - MEMORY_RESERVE) // replay_bytes(1) // 10_000 * 10_000
        where = "the GPU" if place.type == "cuda" else "host memory"
        fix = f"set agent.replay_capacity={fitting} or lower" if fitting else "free memory or use a larger machine"
        raise DeviceError(f"the replay of {capacity:,} transitions needs {needed / 1e9:.1f} GB but {where} has "
                          f"{free / 1e9:.1f} GB free (and {MEMORY_RESERVE >> 30} GB is kept for the rest); {fix}")


def prepare_run_dir(config: Config, requested: str | None, overwrite: bool) -> Path:
    """The run directory, refusing to mix a new run into an existing one unless --overwrite."""
    run_dir = Path(requested) if requested else Path("runs") / paths.default_run_name(config)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"run directory {run_dir} already exists; continue it with --resume {run_dir} "
                              "or pass --overwrite to replace it")
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); --overwrite deletes only runs")
        shutil.rmtree(run_dir)
    ensure_writable(run_dir)
    return run_dir


def ensure_writable(run_dir: Path) -> None:
    """Create `run_dir` if needed and prove a file can be written there, before any training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to run directory {run_dir}: {error.strerror or error}") from None


def start(args: argparse.Namespace) -> SequenceTrainer:
    """A new run, with every check that can fail done before the run directory is made."""
    config = resolve_config(args)
    device = resolve_device(config.run.device)
    check_replay_fits(config, device)
    run_dir = prepare_run_dir(config, args.run_dir, args.overwrite)
    return SequenceTrainer(config, run_dir, device)


def resume(args: argparse.Namespace) -> SequenceTrainer:
    """An earlier run at its newest checkpoint, with its own config.yaml; nothing is written until
    the checkpoint has loaded into the trainer."""
    run_dir, checkpoint = paths.resume_point(args.resume)
    config = build_config(run_dir / "config.yaml")
    validate(config)
    device = resolve_device(args.device or config.run.device)
    check_replay_fits(config, device)
    trainer = SequenceTrainer.resume(config, run_dir, device, checkpoint)
    ensure_writable(run_dir)
    paths.remove_partial_writes(run_dir)
    print(f"resuming from {checkpoint}", file=sys.stderr)
    return trainer


def resume_command(run_dir: Path, args: argparse.Namespace) -> str:
    device = f" --device {shlex.quote(args.device)}" if args.resume and args.device else ""
    return f"python {shlex.quote(sys.argv[0])} --resume {shlex.quote(str(run_dir))}{device}"


def train(trainer: SequenceTrainer, resume_hint: str) -> int:
    """Run to the end; SIGINT/SIGTERM stop it cleanly after the current update (exit 128 + signal)."""

    def stop(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        trainer.request_stop(name)
        # os.write, not print: the handler may run inside a print to stderr (tqdm), and print is not reentrant
        os.write(2, f"\n{name}: stopping after the current update to save a checkpoint "
                    f"(again to quit without one)\n".encode())
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        trainer.run()
    except TrainingInterrupted as stopped:
        print(f"{stopped}\nresume with: {resume_hint}", file=sys.stderr)
        return 128 + signal.Signals[trainer.stop_reason]
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_games:
        print("\n".join(available_games()))
        return 0
    try:
        trainer = resume(args) if args.resume else start(args)
        if trainer.position.game_index >= len(trainer.games):
            print(f"{trainer.run_dir} has finished all {len(trainer.games)} games; nothing to resume", file=sys.stderr)
            return 0
        print(f"run directory: {trainer.run_dir}  (tensorboard --logdir {trainer.run_dir.parent})", file=sys.stderr)
        return train(trainer, resume_command(trainer.run_dir, args))
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
