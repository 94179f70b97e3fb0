"""Environment families: one game name says which family plays it, and the family says the rest.

    pong, space_invaders, ...        Atari 2600 games through ale-py (84x84 grayscale, 4-frame stacks, 18 actions)
    minatar:breakout, ...            MinAtar's 10x10 miniatures (Young & Tian 2019): 10 binary channels, 6 actions

Everything that depends on the family (the emulators, the network's input and action count, how the
replay stores an observation, how a score is normalised) is read from `Family`; nothing else in the
project builds emulators, networks or replays by family. A run's games all come from one family: one network
serves them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envs import atari, minatar
from envs.config import EnvConfig
from envs.games import MINATAR_PREFIX


@dataclass(frozen=True)
class Family:
    name: str
    num_actions: int
    frame_shape: tuple[int, int, int]
    """One stored frame (C, H, W); an observation is `history` of them along the channels."""
    history: int
    input_scale: float
    """What the network multiplies its uint8 input by (pixels 0..255 -> 0..1; MinAtar is already 0/1)."""
    score_name: str
    """How `normalised_score` normalises this family's scores, for reports."""
    make: Callable[[str, int, EnvConfig], Any]
    reference_episode_limit: int
    """The episode cap the normalisation's reference scores were played under (frames on Atari, agent
    steps on MinAtar): a shorter cap cuts episodes the references played out, so its normalised
    scores are not comparable with them (evaluate.py says so)."""

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.frame_shape
        return (self.history * channels, height, width)


def _make_minatar(game: str, num_envs: int, config: EnvConfig) -> minatar.MinAtarVectorEnv:
    """MinAtar has no frame skip: `max_episode_frames` caps an episode's agent steps."""
    return minatar.MinAtarVectorEnv(
        game.removeprefix(MINATAR_PREFIX),
        num_envs,
        sticky_action_prob=config.sticky_action_prob,
        difficulty_ramping=config.difficulty_ramping,
        max_episode_steps=config.max_episode_frames,
    )


ATARI = Family(
    "atari",
    atari.NUM_ACTIONS,
    (1, 84, 84),
    4,
    1 / 255,
    "human-normalised score (HNS)",
    atari.make_env,
    108_000,  # the Nature-DQN protocol's 30 minutes of play, under which the random and human scores were taken
)
MINATAR = Family(
    "minatar",
    minatar.NUM_ACTIONS,
    (minatar.CHANNELS, minatar.SIDE, minatar.SIDE),
    1,
    1.0,
    "MinAtar-normalised score (0 = random, 1 = this project's single-game DQN; envs/games.py)",
    _make_minatar,
    10_000,  # configs/minatar.yaml's evaluation, under which this project measured its references
)


def family_of(game: str) -> Family:
    return MINATAR if game.startswith(MINATAR_PREFIX) else ATARI


def family_of_run(games: list[str]) -> Family:
    """The one family of a run's games; a mix is refused (one network cannot read both)."""
    families = {family_of(game).name: family_of(game) for game in games}
    if len(families) > 1:
        raise ValueError(f"one run plays one environment family, but {', '.join(games)} mixes {' and '.join(families)} games")
    return next(iter(families.values()))


def make_env(game: str, num_envs: int, config: EnvConfig):
    """The vector env of `game`, whatever its family (same interface: reset/send/recv/step/close)."""
    return family_of(game).make(game, num_envs, config)
