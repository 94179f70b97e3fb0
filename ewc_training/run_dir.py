"""The run directory: where a run's config, provenance, TensorBoard events and checkpoints live.

runs/<name>/
    config.yaml            the resolved config (defaults + preset + flags)
    run.json               git commit, command line, the game sequence, versions, device, start time;
                           each resume, and whether its game had to refill the replay
    events.out.tfevents.*  TensorBoard scalars, the config as text and as hparams
    checkpoints/after_<k>_<game>.pt, checkpoints/latest.pt
    checkpoints/latest_replay.pt  the replay at latest.pt's position (only with run.save_replay)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from ewc_training.checkpoint import TEMPORARY_SUFFIX, CheckpointError, atomic_write
from ewc_training.config import Config
from ewc_training.schema import saved_position

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def path_name(name: str) -> str:
    """A game's, order's or cell's name as a file or folder name: `minatar:breakout` -> `minatar_breakout`.

    Colons (and anything but letters, digits, `.`, `_`, `-`) break on some filesystems and tools
    (Windows, scp, PATH-like lists), so no run directory or checkpoint is named with one."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def default_run_name(config: Config) -> str:
    """`<games>-<method>-s<seed>-<YYYYmmdd-HHMMSS>`, e.g. `pong-breakout-ewc-s0-20261128-101500`."""
    games = "-".join(config.run.games)
    if len(games) > 60:
        games = f"{config.run.games[0]}-and-{len(config.run.games) - 1}-more"
    games = path_name(games)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{games}-{config.consolidation.method}-s{config.run.seed}-{stamp}"


def git_commit() -> str:
    """The project's commit, with `-dirty` when the working tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return _commit_from_git_files() or "unknown"
    return commit + ("-dirty" if dirty else "")


def _commit_from_git_files() -> str | None:
    """HEAD's commit read straight from .git, for images (Docker) that ship .git but no git."""
    git_dir = PROJECT_ROOT / ".git"
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def game_end_checkpoint(run_dir: Path, position: int, game: str) -> Path:
    """`checkpoints/after_<k>_<game>.pt`, k = 1-based position of the game in the sequence."""
    return checkpoint_dir(run_dir) / f"after_{position}_{path_name(game)}.pt"


_GAME_END_NAME = re.compile(r"after_(\d+)_.+\.pt")


def game_end_checkpoints(run_dir: Path) -> list[Path]:
    """The run's `after_<k>_<game>.pt` files, in sequence order (k numerically: 10 after 9)."""
    found = [
        (int(match[1]), file)
        for file in checkpoint_dir(run_dir).glob("after_*.pt")
        if (match := _GAME_END_NAME.fullmatch(file.name))
    ]
    return [file for _, file in sorted(found)]


def run_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint the run has on disk: latest.pt (if any) and its game-end checkpoints."""
    latest = latest_checkpoint(run_dir)
    return ([latest] if latest.is_file() else []) + game_end_checkpoints(run_dir)


def latest_checkpoint(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / "latest.pt"


def replay_checkpoint(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / "latest_replay.pt"


def rehearsal_memory(run_dir: Path, position: int, game: str) -> Path:
    """`checkpoints/rehearsal_<k>_<game>.pt`: the transitions a method with replay kept of the k-th game."""
    return checkpoint_dir(run_dir) / f"rehearsal_{position}_{path_name(game)}.pt"


def rehearsal_memories(run_dir: Path, finished_games: list[str]) -> list[Path]:
    """The memory files of the finished games, in sequence order."""
    return [rehearsal_memory(run_dir, position, game) for position, game in enumerate(finished_games, start=1)]


def run_dir_of(requested: Path) -> Path:
    """The run directory `--resume` names: the folder itself, or the run a checkpoint file is in."""
    if requested.is_file():
        run_dir = requested.parent.parent
        if requested.parent.name != "checkpoints" or not (run_dir / "config.yaml").is_file():
            raise CheckpointError(f"{requested} is not inside a run directory (<run>/checkpoints/*.pt beside <run>/config.yaml)")
        return run_dir
    if not (requested / "config.yaml").is_file():
        raise CheckpointError(f"{requested} is not a run directory (no config.yaml); pass the folder train.py made")
    return requested


def resume_point(requested: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint to resume) for `--resume`: a run directory or a checkpoint in one.

    For a run directory it is the newest checkpoint by position in the sequence: usually latest.pt,
    but the game-end checkpoint when the run finished a game after its last latest.pt. A file
    that cannot be read stops the choice (with the newest readable one named) rather than
    silently resuming days earlier.
    """
    requested = Path(requested)
    run_dir = run_dir_of(requested)
    if requested.is_file():
        return run_dir, requested
    positions, unreadable = {}, []
    for path in run_checkpoints(requested):
        try:
            positions[path] = saved_position(path).order_key
        except CheckpointError as error:
            unreadable.append(str(error))
    newest = max(positions, key=positions.get, default=None)
    if unreadable:
        instead = f"; resume from an older one with --resume {newest}" if newest else ""
        raise CheckpointError(f"{unreadable[0]}{instead}")
    if newest is None:
        raise CheckpointError(f"{checkpoint_dir(run_dir)} holds no checkpoint yet; start the run again instead")
    return run_dir, newest


def remove_partial_writes(run_dir: Path) -> None:
    """Delete checkpoint writes a kill interrupted (they can be as large as the replay)."""
    for temporary in checkpoint_dir(run_dir).glob(f".*{TEMPORARY_SUFFIX}"):
        temporary.unlink(missing_ok=True)


def record_resume(run_dir: Path, checkpoint: Path, total_steps: int) -> dict[str, object]:
    """Append this resume (when, how, which code, from where) to run.json; returns that entry."""
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("resumed", []).append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": sys.argv,
            "git_commit": git_commit(),
            "checkpoint": str(checkpoint),
            "total_steps": total_steps,
            "torch_threads": torch.get_num_threads(),  # may differ from the start's (--threads)
        }
    )
    write_json(path, info)
    return info["resumed"][-1]


def record_population(run_dir: Path, cells: list[Path], total_steps: int) -> None:
    """Append to run.json that this run trains from `total_steps` on as one cell of a population of
    `cells` (their run directories, this one included): its updates are then one batched computation
    with theirs, equal to its updates alone to float32 rounding (agents/population.py)."""
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("populations", []).append({"total_steps": total_steps, "cells": [str(cell) for cell in cells]})
    write_json(path, info)


def record_replay_refilled(run_dir: Path, game: str, step_in_game: int) -> None:
    """Mark the last resume in run.json as one that began mid-game without its replay.

    Such a game learns from a refilled replay and pauses learning while it refills, so its results
    differ from an uninterrupted run's; the sweep report and result pages name these runs (replay_refills).
    """
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("resumed", [{}])[-1]["replay_refilled"] = {"game": game, "step_in_game": step_in_game}
    write_json(path, info)


def replay_refills(info: object) -> str:
    """Where the run in run.json `info` kept a refilled replay, e.g. "minatar:breakout at step 100,000";
    "" when nowhere. A later resume from at or before a refill's position trained over it: dropped."""
    resumes = info.get("resumed", []) if isinstance(info, dict) else []
    kept: list[tuple[int, dict]] = []
    for entry in resumes:
        kept = [(steps, where) for steps, where in kept if steps < entry.get("total_steps", 0)]
        if "replay_refilled" in entry:
            kept.append((entry.get("total_steps", 0), entry["replay_refilled"]))
    return "; ".join(f"{where['game']} at step {where['step_in_game']:,}" for _, where in kept)


def write_run_files(
    run_dir: Path, config: Config, device: torch.device, branched_from: dict[str, object] | None = None
) -> dict[str, object]:
    """Save the resolved config and the provenance of this run; returns the provenance.

    A branch (train.py --branch-from) records its source: the checkpoint, the games it had trained,
    the commit and the config they were trained with (which may differ from this run's)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write(run_dir / "config.yaml", lambda handle: handle.write(text.encode()))
    info = {
        "git_commit": git_commit(),
        "command": sys.argv,
        "sequence": config.run.games,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # On a CPU the thread count changes how sums are split, so results match bit for bit only
        # at the same count (one on a CPU unless --threads or OMP_NUM_THREADS says otherwise: device.configure_threads).
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "machine": machine_description(),
        **({"branched_from": branched_from} if branched_from is not None else {}),
    }
    write_json(run_dir / "run.json", info)
    return info


def machine_description() -> str:
    """The host a run trained on, for result pages: CPU model and core count, e.g. "AMD EPYC 7B13, 2 cores"."""
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def write_json(path: Path, value: object) -> None:
    """run.json is written atomically, like the checkpoints: a kill leaves the old file or the new."""
    text = json.dumps(value, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


class RunInUseError(ValueError):
    """Another live process is training into (or resuming) this run directory."""


_held_locks: dict[Path, int] = {}
"""Run directories this process holds open and locked: a lock lives as long as its descriptor."""

NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
"""Errors of a filesystem that cannot lock (some network filesystems): the run goes on unlocked."""


def lock_run_dir(run_dir: Path) -> None:
    """Make this process the run directory's only writer, until it exits.

    An exclusive `flock` on the directory itself: nothing is written to hold it, the kernel releases
    it when the process ends in any way (kill -9 included), so a crash never leaves a stale lock, and
    a second process is refused at once. A filesystem that cannot lock gets a warning, not an error.
    """
    run_dir = run_dir.resolve()
    if run_dir in _held_locks:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunInUseError(f"{run_dir} is being written by another process; wait for it to finish or stop it first") from None
    except OSError as error:
        if error.errno not in NO_FLOCK:
            raise
        print(
            f"warning: {run_dir} cannot be locked on this filesystem ({error.strerror}); "
            "make sure no other process writes this run",
            file=sys.stderr,
        )
    _held_locks[run_dir] = descriptor


def unlock_run_dir(run_dir: Path) -> None:
    """Release this process's lock early (tests; a process that exits releases it anyway)."""
    descriptor = _held_locks.pop(run_dir.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


def has_run_files(run_dir: Path) -> bool:
    """Whether `run_dir` exists and holds anything."""
    return run_dir.is_dir() and any(run_dir.iterdir())
