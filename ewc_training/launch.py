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
                f"{fitting_cells} of them fit: train fewer at once or set a smaller agent.replay_capacity"
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
    run_dir = Path(requested_dir) if requested_dir else Path("runs") / paths.default_run_name(config)
    return start_runs([(config, run_dir)], overwrite, branch_from)[0]


def new_run_dirs(configs: list[Config], requested_dir: str | None) -> list[Path]:
    """Where new runs go: one run in `requested_dir` (default runs/<name>); several, each named as a run
    alone (<games>-<method>-s<seed>-<time>), in `requested_dir` (default runs/)."""
    if len(configs) == 1:
        return [Path(requested_dir) if requested_dir else Path("runs") / paths.default_run_name(configs[0])]
    parent = Path(requested_dir) if requested_dir else Path("runs")
    return [parent / paths.default_run_name(config) for config in configs]


def start_runs(runs: list[tuple[Config, Path]], overwrite: bool, branch_from: str | None = None) -> list[SequenceTrainer]:
    """New runs (config, run directory), every check of every run made before any is written; with
    `branch_from`, each starts at that game-end checkpoint of another run."""
    check_distinct([run_dir for _, run_dir in runs])
    for config, run_dir in runs:
        warn_if_never_consolidated(config)
        warn_if_never_learning(config)
        check_replaceable(run_dir, overwrite)
    device = resolve_device(runs[0][0].run.device)
    check_replay_fits(runs[0][0], device, cells=[config for config, _ in runs])
    trainers = [build_run(config, run_dir, branch_from) for config, run_dir in runs]  # writes nothing
    for trainer in trainers:
        prepare_run_dir(trainer.run_dir, overwrite)
        if branch_from is not None:
            where = f"game {trainer.position.game_index + 1} of {len(trainer.games)}"
            print(f"branching from {branch_from} at {where}", file=sys.stderr)
    return trainers


def build_run(config: Config, run_dir: Path, branch_from: str | None) -> SequenceTrainer:
    """The trainer of a new run (at the first game, or at `branch_from`'s boundary); writes nothing."""
    device = resolve_device(config.run.device)
    if branch_from is None:
        return SequenceTrainer(config, run_dir, device, TensorBoardLogger(run_dir))
    source = Path(branch_from)
    if not source.is_file():
        raise ConfigError(
            f"--branch-from {branch_from}: no such file; it takes a game-end checkpoint (runs/<name>/checkpoints/after_1_pong.pt)"
        )
    if run_dir.resolve() == source.resolve().parent.parent:  # <run>/checkpoints/<file>: a checkpoint may also stand alone
        raise ConfigError(f"--run-dir is the run {branch_from} belongs to; a branch is a new run: name another folder")
    return SequenceTrainer.branch(config, run_dir, device, TensorBoardLogger(run_dir), source)


def check_distinct(run_dirs: list[Path]) -> None:
    """Refuse two cells of one command in one run directory (a process's own lock would not stop them)."""
    seen: set[Path] = set()
    for run_dir in run_dirs:
        if run_dir.resolve() in seen:
            raise ConfigError(
                f"two runs of this command would write to {run_dir}; give each --cell its own --run-dir (or name it once)"
            )
        seen.add(run_dir.resolve())


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
