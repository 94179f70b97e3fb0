"""Evaluating a run's checkpoints on a set of games: the matrix behind evaluate.py.

A continual-learning result is a matrix: one row per checkpoint ("after game k"), one column per
game, each cell the raw scores of some evaluation episodes. The run's own config.yaml says what
network its checkpoints must hold and which sequence they belong to; a checkpoint that does not
fit is reported in one line and the others are still evaluated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from agents.build import build_network
from agents.network import QNetwork
from envs.families import family_of_run
from envs.games import MINATAR_PREFIX, MINATAR_REFERENCE_SCORES, normalised_score
from ewc_evaluation.config import EvalConfig
from ewc_evaluation.metrics import HnsMatrix, summarise
from ewc_evaluation.protocol import play_episodes
from ewc_evaluation.video import film_episode
from ewc_training import run_dir as paths
from ewc_training.checkpoint import CheckpointError
from ewc_training.config import Config, ConfigError, build_config, config_from_dict, load_yaml
from ewc_training.errors import first_line
from ewc_training.schema import Position, saved_network

PROTOCOL_FLAGS = ("episodes", "epsilon", "max_episode_frames")
"""The eval section's keys evaluate.py's flags may change; each left out is the run's own."""


class RunError(ValueError):
    """A folder that cannot be evaluated as a run; the message names it."""


@dataclass
class Run:
    """A run directory as evaluate.py needs it: its config and the checkpoints to score."""

    path: Path
    config: Config
    checkpoints: list[Path]

    @property
    def sequence(self) -> list[str]:
        return self.config.run.games


@dataclass
class MatrixRow:
    """One checkpoint's scores: game -> raw score of every evaluation episode."""

    checkpoint: str
    games_done: int
    """Games of the sequence finished when the checkpoint was saved (k in "after game k")."""
    step_in_game: int
    """0 for a game-end checkpoint; the step reached in game k+1 for a mid-game one (latest.pt)."""
    trained_game: str
    scores: dict[str, list[float]] = field(default_factory=dict)

    @property
    def is_game_end(self) -> bool:
        return self.step_in_game == 0 and self.games_done > 0

    @property
    def label(self) -> str:
        if self.is_game_end:
            return f"after game {self.games_done} ({self.trained_game})"
        return f"game {self.games_done + 1} ({self.trained_game}) at step {self.step_in_game:,}"


@dataclass
class RunEvaluation:
    """The matrix of one run, with how it was measured and what could not be."""

    run: Run
    games: list[str]
    protocol: EvalConfig
    seed: int
    rows: list[MatrixRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def hns(self) -> HnsMatrix:
        """R[k][game], mean HNS, from the game-end rows (the ones the metrics are defined on)."""
        return game_end_hns((row.games_done, row.step_in_game, row.scores) for row in self.rows)

    def metrics(self) -> dict[str, object]:
        return summarise(self.hns(), self.run.sequence, single_game_references(self.run.sequence, self.run.config))


def game_end_hns(rows: Iterable[tuple[int, int, dict[str, list[float]]]]) -> HnsMatrix:
    """R[k][game] from (games_done, step_in_game, raw scores per game) rows: the game-end ones."""
    return {
        done: {game: float(np.mean(cell_hns(game, scores))) for game, scores in scores_by_game.items()}
        for done, step_in_game, scores_by_game in rows
        if step_in_game == 0 and done > 0
    }


REFERENCE_PRESET = paths.PROJECT_ROOT / "configs" / "minatar.yaml"
"""The config MINATAR_REFERENCE_SCORES' single-game agents trained with (150,000 agent steps a game)."""


def single_game_references(games: list[str], config: Config | None) -> dict[str, float] | None:
    """R*_g of forward transfer, each game's normalised score trained alone by the same agent at the
    same budget, where the references give it: 1 for MinAtar games when the run's agent, network,
    emulators and steps per game are the references' (REFERENCE_PRESET); None otherwise (Atari's
    human scores are not single-game agents, and another agent's references would not be its own)."""
    if config is None or not all(game.removeprefix(MINATAR_PREFIX) in MINATAR_REFERENCE_SCORES for game in games):
        return None
    if not all(game.startswith(MINATAR_PREFIX) for game in games) or not REFERENCE_PRESET.is_file():
        return None
    reference, run = build_config(REFERENCE_PRESET).to_dict(), config.to_dict()
    same = all(run[section] == reference[section] for section in ("env", "network", "agent"))
    if not same or run["run"]["steps_per_game"] != reference["run"]["steps_per_game"]:
        return None
    return dict.fromkeys(games, 1.0)


def saved_metrics(saved: dict, config: Config | None = None) -> dict[str, object]:
    """The metrics of an eval.json, recomputed from its raw episode scores with today's definitions
    and references: a file written before a metric changed (or was added) reads as a new one would.
    Forward transfer needs the run's `config` (single_game_references)."""
    rows = (
        (row["games_done"], row["step_in_game"], {game: cell["scores"] for game, cell in row["cells"].items()})
        for row in saved["rows"]
    )
    return summarise(game_end_hns(rows), saved["sequence"], single_game_references(saved["sequence"], config))


def cell_hns(game: str, scores: list[float]) -> np.ndarray:
    """HNS of every episode of a cell (NaN for a game without reference scores)."""
    return np.array([normalised_score(game, score) for score in scores])


def open_run(path: str | Path, picked: list[str] | None = None) -> Run:
    """Read a run directory: its config, and its game-end checkpoints in order (or `picked` ones).

    A picked name is a path, or a file name inside the run's checkpoints/ folder.
    """
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise RunError(f"{path}: not a run directory (no config.yaml)")
    try:
        config = config_from_dict(load_yaml(path / "config.yaml"))
    except ConfigError as error:
        raise RunError(f"{path}: {error}") from None
    folder = paths.checkpoint_dir(path)
    if picked:
        checkpoints = [Path(name) if Path(name).exists() else folder / name for name in picked]
    else:
        checkpoints = paths.game_end_checkpoints(path)
    if not checkpoints:
        raise RunError(f"{path}: no game-end checkpoints in {folder} (checkpoints/after_<k>_<game>.pt)")
    return Run(path, config, checkpoints)


def run_protocol(run: Run, flags: dict[str, object]) -> EvalConfig:
    """The protocol `run` is scored with: its config's eval section (the one its training-time
    evaluation used), with each of PROTOCOL_FLAGS that `flags` gives (not None) in its place.

    Emulator settings (sticky actions, no-ops, MinAtar's difficulty ramping) are always the run's
    env section: scoring under emulators the network was not trained on would measure something else.
    """
    protocol = replace(run.config.eval, **{name: flags[name] for name in PROTOCOL_FLAGS if flags.get(name) is not None})
    for name in ("episodes", "max_episode_frames"):  # 0 is allowed in a config whose training never evaluates
        if getattr(protocol, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise RunError(f"{run.path}: its config.yaml has eval.{name}={getattr(protocol, name)}; give {flag}")
    return protocol


def protocol_sources(run: Run, protocol: EvalConfig) -> dict[str, str]:
    """Where each of PROTOCOL_FLAGS in `protocol` came from: the run's config.yaml, or a flag that
    changed it (a flag that repeats the run's value reads as the run's)."""
    saved = run.config.eval
    return {name: "run config" if getattr(protocol, name) == getattr(saved, name) else "flag" for name in PROTOCOL_FLAGS}


def load_network(run: Run, checkpoint: Path, device: torch.device) -> tuple[QNetwork, Position]:
    """The checkpoint's online network, built as the run's config says, and its position.

    Raises CheckpointError (one line, naming the file) for a file that is not a checkpoint, that
    belongs to another sequence of games, or whose weights do not fit the run's network.
    """
    weights, position = saved_network(checkpoint, run.sequence, device)
    network = build_network(run.config.network, run.sequence, family_of_run(run.sequence)).to(device)
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{checkpoint}: does not fit the network of the run's config ({first_line(error)})") from None
    return network.eval(), position


def evaluate_run(
    run: Run,
    games: list[str],
    protocol: EvalConfig,
    device: torch.device,
    seed: int,
    video_dir: Path | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> RunEvaluation:
    """Score every checkpoint of `run` on every game in `games`; unusable checkpoints go to errors.

    Every cell uses the same `seed`, so a column compares checkpoints on the same episode starts.
    With `video_dir`, one more episode per cell is filmed there as <checkpoint>_<game>.mp4.
    """
    evaluation = RunEvaluation(run, list(dict.fromkeys(games)), protocol, seed)  # a revisited game is one column
    for checkpoint in run.checkpoints:
        try:
            network, position = load_network(run, checkpoint, device)
        except CheckpointError as error:
            evaluation.errors.append(str(error))
            progress(f"error: {error}")
            continue
        done = position.game_index
        trained = run.sequence[done - 1 if position.step_in_game == 0 else done]
        row = MatrixRow(checkpoint.name, done, position.step_in_game, trained)
        for game in evaluation.games:
            started = time.perf_counter()
            scores = play_episodes(network, game, protocol, run.config.env, seed)
            row.scores[game] = scores.tolist()
            progress(
                f"{run.path.name} {checkpoint.name} on {game}: {scores.mean():.1f} ± {scores.std():.1f} "
                f"({len(scores)} episodes, {time.perf_counter() - started:.1f} s)"
            )
            if video_dir is not None:
                film = video_dir / f"{checkpoint.stem}_{game}.mp4"
                progress(f"  filmed {film} (score {film_episode(network, game, protocol, run.config.env, seed, film):.0f})")
        evaluation.rows.append(row)
    evaluation.rows.sort(key=lambda row: (row.games_done, row.step_in_game))
    return evaluation
