"""What a checkpoint holds, in one place: training writes it; resuming, evaluation and the run
directory's listing read it through the functions here, never by key.

    {format, config, games, position, learner{online, target, optimizer, updates, updates_since_sync}, consolidation,
     probes{game: {states, greedy_actions, q_values}}, generator, torch_rng, device_type, git_commit}

The replay saved beside latest.pt (`run.save_replay`) is {format, position, replay}: it is used only
when its position is the resumed checkpoint's, so a kill between the two writes is harmless.
A method with replay keeps each finished game's memory in its own file, {format, game, memory}
(agents/rehearsal.py), written once before the game's after_<k>_<game>.pt: it never changes after.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from agents.dqn import DQNLearner
from agents.ewc.probes import ProbeSet
from agents.rehearsal import Rehearsal
from agents.replay import FrameReplay
from ewc_training.checkpoint import CheckpointError, compact, load_checkpoint
from ewc_training.config import config_from_dict
from ewc_training.errors import first_line


@dataclass
class Position:
    """Where the run is in its sequence; saved in every checkpoint."""

    game_index: int = 0
    step_in_game: int = 0
    total_steps: int = 0
    updates_in_game: int = 0
    updates_skipped: int = 0
    """Updates this game's schedule will not make: after a resume without a saved replay, learning
    waits `learning_starts` steps for the refilled buffer instead of catching up all at once."""

    @property
    def order_key(self) -> tuple[int, int]:
        """Sorts checkpoints by how far into the sequence they are."""
        return self.game_index, self.step_in_game


@dataclass
class TrainingState:
    """Everything a trainer saves beside its config, as live objects."""

    position: Position
    learner: DQNLearner
    probes: dict[str, ProbeSet]
    generator: torch.Generator


def training_payload(config: dict, games: list[str], state: TrainingState, device: torch.device, git_commit: str) -> dict:
    """The checkpoint of a trainer: enough to evaluate its network alone and to resume it exactly."""
    return {
        "config": config,
        "games": list(games),
        "position": asdict(state.position),
        "learner": compact(state.learner.get_state()),  # a population's cell holds views of larger tensors
        "consolidation": state.learner.consolidation.get_state(),
        "probes": {game: probe.get_state() for game, probe in state.probes.items()},
        "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "device_type": device.type,
        "git_commit": git_commit,
    }


def restore_training(path: Path, games: list[str], state: TrainingState, device: torch.device) -> None:
    """Load checkpoint `path` into `state` (and torch's global generator); a checkpoint of another
    run's games, device or network is a one-line CheckpointError naming the file."""
    payload = load_checkpoint(path, map_location=device)
    try:
        if list(payload["games"]) != games:
            raise ValueError(f"it was trained on games {payload['games']}, config.yaml lists {games}")
        restore_payload(payload, state, device, keep_consolidation=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: does not fit this run ({first_line(error)})") from None


BRANCH_KEEPS = ("env", "network", "agent")
"""Config sections a branch shares with its source, with run.seed: the learner and its emulators
continue as they were. What may differ: the games after the boundary, consolidation, steps per game,
evaluation, logging and checkpoints."""


def restore_branch(path: Path, config: dict, state: TrainingState, device: torch.device) -> dict:
    """Start a new run of `config` (a Config.to_dict()) at the game boundary checkpoint `path` of another
    run; returns the checkpoint's payload.

    Allowed when the source trained exactly the new run's first k games (k = the boundary's game
    index), with the same env, network and agent settings and seed, on the same kind of device. The
    learner, probes and generators come back as they were, so the new run continues as the source
    would have had it been given these games. The consolidation state comes along when the new run uses
    the source's method (lambda is read from the new config, so a branch may change it); a branch to
    `finetune` drops it. Any other change of method needs that method's own state at the boundary.
    """
    payload = load_checkpoint(path, map_location=device)
    games = config["run"]["games"]
    try:
        position, source_games = Position(**payload["position"]), list(payload["games"])
        source_config = config_from_dict(payload["config"]).to_dict()  # keys added since it was saved: their defaults
        if position.step_in_game != 0 or position.game_index == 0:
            raise ValueError("it was saved in the middle of a game; branch from a game-end checkpoint (after_<k>_<game>.pt)")
        trained = source_games[: position.game_index]
        if games[: len(trained)] != trained:
            raise ValueError(f"it has trained {','.join(trained)}, which does not begin this run's sequence {','.join(games)}")
        if len(games) == len(trained):
            raise ValueError(f"this run's sequence {','.join(games)} has no game left after it; add the games to train next")
        check_branch_config(source_config, config, source_games, trained)
        source_method, method = payload["consolidation"]["name"], state.learner.consolidation.name
        if method not in (source_method, "finetune"):
            raise ValueError(
                f"it holds {source_method} consolidation; a branch can keep it or drop it (finetune), not become {method}"
            )
        restore_payload(payload, state, device, keep_consolidation=method == source_method)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: cannot branch from it ({first_line(error)})") from None
    return payload


def check_branch_config(source: dict, config: dict, source_games: list[str], trained: list[str]) -> None:
    """Refuse a branch whose learner or emulators would differ from the source's (BRANCH_KEEPS), or whose
    bookkeeping would be wrong: per-game parameters are made for a whole sequence, and a revisit
    counts its earlier visits as `steps_per_game` each."""
    for section in BRANCH_KEEPS:
        for key, value in config[section].items():
            if source[section].get(key) != value:
                raise ValueError(
                    f"it was trained with {section}.{key}={source[section].get(key)}, this run has {value}; a branch "
                    f"keeps the source's {', '.join(BRANCH_KEEPS)} settings and seed"
                )
    if source["run"]["seed"] != config["run"]["seed"]:
        raise ValueError(f"it was trained with seed {source['run']['seed']}, this run has {config['run']['seed']}")
    if config["network"]["per_game_modulation"] and source_games != config["run"]["games"]:
        raise ValueError(
            "with network.per_game_modulation a branch needs a source trained on the same --games (its per-game parameters)"
        )
    revisited = set(trained) & set(config["run"]["games"][len(trained) :])
    if revisited and source["run"]["steps_per_game"] != config["run"]["steps_per_game"]:
        raise ValueError(
            f"it trained {source['run']['steps_per_game']:,} steps a game and this run revisits {', '.join(sorted(revisited))} "
            f"at {config['run']['steps_per_game']:,}: the revisit would miscount its earlier steps; keep run.steps_per_game"
        )


def restore_payload(payload: dict, state: TrainingState, device: torch.device, keep_consolidation: bool) -> None:
    """Everything a checkpoint saved, into `state` and torch's global generator."""
    if payload["device_type"] != device.type:
        raise ValueError(f"it was written on {payload['device_type']}; use it there (generator states do not move)")
    check_same_shapes(payload["learner"]["online"], state.learner.online.state_dict())
    state.position = Position(**payload["position"])
    state.learner.set_state(payload["learner"])
    if keep_consolidation:
        state.learner.consolidation.set_state(payload["consolidation"])
    state.probes = {game: ProbeSet(**probe) for game, probe in payload["probes"].items()}
    state.generator.set_state(payload["generator"].cpu())
    torch.set_rng_state(payload["torch_rng"].cpu())


def check_same_shapes(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """One readable line for a checkpoint of another network (torch's own error spans many)."""
    if saved.keys() != expected.keys():
        different = sorted(saved.keys() ^ expected.keys())
        raise ValueError(f"its network has other layers ({different[0]} is in only one of it and config.yaml)")
    for name, tensor in saved.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"its network has another shape ({name}: {tuple(tensor.shape)} in the checkpoint, "
                f"{tuple(expected[name].shape)} from config.yaml)"
            )


def saved_position(path: Path) -> Position:
    """The position a checkpoint was saved at, read without checking the whole (large) file."""
    payload = load_checkpoint(path, mmap=True, verify=False)
    try:
        return Position(**payload["position"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a training checkpoint (no position: {first_line(error)})") from None


def saved_network(path: Path, games: list[str], device: torch.device) -> tuple[dict[str, torch.Tensor], Position]:
    """The online network's weights and the position of a checkpoint of a run on `games`."""
    payload = load_checkpoint(path, map_location=device)
    if payload.get("games") != games:
        raise CheckpointError(f"{path}: trained on {payload.get('games')}, not this run's {games}")
    try:
        return payload["learner"]["online"], Position(**payload["position"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: does not fit the network of the run's config ({first_line(error)})") from None


def replay_payload(position: Position, replay: FrameReplay) -> dict:
    return {"position": asdict(position), "replay": replay.get_state()}


def replay_saved_at(path: Path, position: Position) -> bool:
    """Whether the replay file at `path` was saved at exactly `position` (a peek: its frames stay on disk)."""
    if not path.is_file():
        return False
    try:
        return load_checkpoint(path, mmap=True, verify=False)["position"] == asdict(position)
    except (CheckpointError, KeyError, RuntimeError):
        return False


def restore_replay(path: Path, position: Position, replay: FrameReplay) -> bool:
    """Load the replay saved at `path` into `replay` if it was saved at exactly `position`.

    Returns whether it was used. A replay of another position (a kill between the replay's write and
    latest.pt's) is ignored; an unreadable one is reported on stderr and ignored.
    """
    if not path.is_file():
        return False
    try:
        saved = load_checkpoint(path, mmap=True)  # copied straight into the replay, never held twice
        if saved["position"] != asdict(position):
            return False
        replay.set_state(saved["replay"])
    except (CheckpointError, KeyError, RuntimeError) as error:
        print(f"warning: cannot use the saved replay ({first_line(error)})", file=sys.stderr)
        return False
    return True


def restore_rehearsal(files: list[Path], rehearsal: Rehearsal) -> None:
    """Load the finished games' memories from `files`, in sequence order (a revisit's replaces the
    earlier visit's); a missing or unreadable file is a one-line CheckpointError naming it."""
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; a method with replay needs the transitions it kept of every finished game")
        payload = load_checkpoint(path, map_location=rehearsal.device)
        try:
            rehearsal.set_state(payload)
        except (KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{path}: not a rehearsal memory ({first_line(error)})") from None
