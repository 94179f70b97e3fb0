"""Starting and resuming a run: every check that can fail is made before anything is written.

start_run:  config -> device -> replay fits? -> run directory (locked) -> trainer
start_run with branch_from: the same checks -> the other run's game-end checkpoint loaded ->
            run directory (locked) -> trainer at that boundary
resume_run: run directory (locked) -> newest checkpoint -> its config.yaml -> trainer at that position
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import torch

from agents.ewc.methods import has_penalty, rehearses
from agents.rehearsal import memory_bytes
from agents.replay import replay_bytes
from envs.families import family_of_run
from ewc_training import run_dir as paths
from ewc_training.config import Config, ConfigError, build_config
from ewc_training.device import DeviceError, free_memory_bytes, resolve_device
from ewc_training.logger import TensorBoardLogger
from ewc_training.population import PopulationTrainer
from ewc_training.schedule import replay_capacity
from ewc_training.trainer import SequenceTrainer, TrainingInterrupted

MEMORY_RESERVE = 1 << 30
"""Bytes kept free beside the replay for the networks, optimizer, consolidation and emulators."""


def replay_bytes_needed(config: Config) -> int:
    """Bytes one run's replay takes; a method with replay also holds a memory of every game (all of them
    once the last has ended)."""
    capacity = replay_capacity(config.agent, config.run.steps_per_game, config.env.num_envs)
    family = family_of_run(config.run.games)
    cons, games = config.consolidation, len(set(config.run.games))  # the last game's is drawn at its end too
    memories = games * memory_bytes(cons.replay_per_game, family.observation_shape, family.frame_shape[0])
    return replay_bytes(capacity, family.frame_shape) + (memories if rehearses(cons.method) else 0)


def check_replay_fits(config: Config, device: torch.device, cells: list[Config] | None = None) -> None:
    """Refuse, before anything is allocated, replays the device (or, to save them, the host) cannot hold:
    this run's, or those of all `cells` trained together in one process."""
    cells = cells or [config]
    needed = sum(replay_bytes_needed(cell) for cell in cells)
    frame_shape = family_of_run(config.run.games).frame_shape
    capacity = replay_capacity(config.agent, config.run.steps_per_game, config.env.num_envs)
    places = [device] + ([torch.device("cpu")] if config.run.save_replay and device.type == "cuda" else [])
    for place in places:
        free = free_memory_bytes(place)
        if free is None or needed + MEMORY_RESERVE <= free:
            continue
        where = "the GPU" if place.type == "cuda" else "host memory"
        what = f"the replay of {capacity:,} transitions" + (
            " with the rehearsal memories" if rehearses(config.consolidation.method) else ""
        )
        if len(cells) > 1:
            fitting_cells = max(0, free - MEMORY_RESERVE) // (needed // len(cells))
            raise DeviceError(
                f"the replays of {len(cells)} cells ({capacity:,} transitions each) need {needed / 1e9:.1f} GB but {where} has "
                f"{free / 1e9:.1f} GB free (and {MEMORY_RESERVE >> 30} GB is kept for the rest); "
                f"{fitting_cells} cells fit: train fewer at once or set a smaller agent.replay_capacity"
            )
        fitting = max(0, free - MEMORY_RESERVE) // replay_bytes(1, frame_shape) // 10_000 * 10_000
        fix = f"set agent.replay_capacity={fitting} or lower" if fitting else "free memory or use a larger machine"
        raise DeviceError(
            f"{what} needs {needed / 1e9:.1f} GB but {where} has "
            f"{free / 1e9:.1f} GB free (and {MEMORY_RESERVE >> 30} GB is kept for the rest); {fix}"
        )


def prepare_run_dir(run_dir: Path, overwrite: bool) -> Path:
    """The run directory, locked for this process; an existing run is replaced only with `overwrite`."""
    check_replaceable(run_dir, overwrite)
    ensure_writable(run_dir)
    paths.lock_run_dir(run_dir)  # before deleting: never replace a run another process is writing
    check_replaceable(run_dir, overwrite)  # again: a run may have been written before the lock was ours
    if overwrite:
        for entry in run_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return run_dir


def check_replaceable(run_dir: Path, overwrite: bool) -> None:
    """Refuse to mix a new run into an existing one, or to --overwrite a folder that holds no run."""
    if not paths.has_run_files(run_dir):
        return
    if not overwrite:
        raise ConfigError(
            f"run directory {run_dir} already exists; continue it with --resume {run_dir} or pass --overwrite to replace it"
        )
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); --overwrite deletes only runs")


def ensure_writable(run_dir: Path) -> None:
    """Create `run_dir` if needed and prove a file can be written there, before any training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to run directory {run_dir}: {error.strerror or error}") from None


def warn_if_never_consolidated(config: Config) -> None:
    """Say before training when `consolidate_after_steps` is more than a game will ever be trained:
    such a game is never protected, and the run is fine-tuning for it."""
    threshold, sequence = config.consolidation.consolidate_after_steps, config.run.games
    if not has_penalty(config.consolidation.method) or threshold == 0:
        return
    short = [game for game in dict.fromkeys(sequence) if sequence.count(game) * config.run.steps_per_game < threshold]
    if short:
        print(
            f"warning: {', '.join(short)} will never be consolidated: trained fewer than "
            f"consolidation.consolidate_after_steps={threshold:,} agent steps in all",
            file=sys.stderr,
        )


def warn_if_never_learning(config: Config) -> None:
    """Say before training when a game ends before `agent.learning_starts`: no update is ever made,
    and the run only acts (the default 80,000 is more than a short `--steps-per-game`)."""
    if config.agent.learning_starts >= config.run.steps_per_game:
        print(
            f"warning: no game will learn: each ends after {config.run.steps_per_game:,} agent steps, before "
            f"agent.learning_starts={config.agent.learning_starts:,}",
            file=sys.stderr,
        )


def start_run(config: Config, requested_dir: str | None, overwrite: bool, branch_from: str | None = None) -> SequenceTrainer:
    """A new run of a validated `config`; with `branch_from`, one that starts at that game-end
    checkpoint of another run (SequenceTrainer.branch) instead of at the first game."""
    warn_if_never_consolidated(config)
    warn_if_never_learning(config)
    device = resolve_device(config.run.device)
    check_replay_fits(config, device)
    run_dir = Path(requested_dir) if requested_dir else Path("runs") / paths.default_run_name(config)
    if branch_from is None:
        return SequenceTrainer(config, prepare_run_dir(run_dir, overwrite), device, TensorBoardLogger(run_dir))
    source = Path(branch_from)
    if not source.is_file():
        raise ConfigError(
            f"--branch-from {branch_from}: no such file; it takes a game-end checkpoint (runs/<name>/checkpoints/after_1_pong.pt)"
        )
    if run_dir.resolve() == source.resolve().parent.parent:  # <run>/checkpoints/<file>: a checkpoint may also stand alone
        raise ConfigError(f"--run-dir is the run {branch_from} belongs to; a branch is a new run: name another folder")
    trainer = SequenceTrainer.branch(config, run_dir, device, TensorBoardLogger(run_dir), source)  # writes nothing
    prepare_run_dir(run_dir, overwrite)
    print(f"branching from {source} at game {trainer.position.game_index + 1} of {len(config.run.games)}", file=sys.stderr)
    return trainer


def start_cells(
    configs: list[Config], requested_dir: str | None, overwrite: bool, branch_from: str | None = None
) -> list[SequenceTrainer]:
    """The runs of several cells (one config each), every check made before any is written: one cell is
    `start_run`; more get their own run directories, named as a run alone, in `requested_dir` (or runs/)."""
    if len(configs) == 1:
        return [start_run(configs[0], requested_dir, overwrite, branch_from)]
    check_replay_fits(configs[0], resolve_device(configs[0].run.device), cells=configs)
    parent = Path(requested_dir) if requested_dir else Path("runs")
    return [start_run(config, str(parent / paths.default_run_name(config)), overwrite, branch_from) for config in configs]


def resume_run(requested: str, device_name: str | None = None) -> SequenceTrainer:
    """An earlier run at its newest checkpoint (or the checkpoint `requested` names), with its own
    config.yaml; nothing is written until the checkpoint has loaded into the trainer."""
    paths.lock_run_dir(paths.run_dir_of(Path(requested)))  # first: the checkpoints may be being written
    run_dir, checkpoint = paths.resume_point(requested)
    config = build_config(run_dir / "config.yaml")
    config.validate()
    device = resolve_device(device_name or config.run.device)
    check_replay_fits(config, device)
    trainer = SequenceTrainer.resume(config, run_dir, device, TensorBoardLogger(run_dir), checkpoint)
    ensure_writable(run_dir)
    paths.remove_partial_writes(run_dir)
    print(f"resuming from {checkpoint}", file=sys.stderr)
    return trainer


def train_until_done_or_stopped(trainer: SequenceTrainer | PopulationTrainer, resume_hint: str) -> int:
    """Run to the end (0); SIGINT/SIGTERM stop it cleanly after the current update (128 + signal).

    A second signal of the same kind falls back to the default action: quit without a checkpoint.
    """

    def stop(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        trainer.request_stop(name)
        # os.write, not print: the handler may run inside a print to stderr (tqdm), and print is not reentrant
        os.write(2, f"\n{name}: stopping after the current update to save a checkpoint (again to quit without one)\n".encode())
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        trainer.run()
    except TrainingInterrupted as stopped:
        print(f"{stopped}\nresume with: {resume_hint}", file=sys.stderr)
        return 128 + signal.Signals[trainer.stop_reason]
    return 0
