"""Scoring a network on Atari games, the same way while training and in evaluate.py.

The protocol is the one behind published Atari scores (Mnih et al. 2015; Machado et al. 2018):
the raw game score (no reward clipping), whole games (a lost life does not end the episode), up
to 30 no-op actions at the start, epsilon-greedy actions with a small epsilon (0.05), and episodes
cut at 108,000 frames (30 minutes of play). Each game gets its own vector environment, separate
from the one being trained on, and its episodes run in parallel, one per emulator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from agents.dqn import explore
from agents.network import QNetwork
from envs.config import EnvConfig
from envs.episodes import EpisodeTracker
from envs.families import make_env
from envs.games import normalised_score
from ewc_evaluation.config import EvalConfig
from ewc_evaluation.metrics import mean_hns, total_clipped_hns

MAX_PARALLEL_EPISODES = 16
"""Emulators per evaluation; more episodes than this are shared out among them."""


def episode_quotas(episodes: int, num_envs: int) -> np.ndarray:
    """How many episodes each emulator plays: `episodes` split as evenly as possible.

    Fixing the count per emulator up front matters: keeping whichever episodes end first would
    over-sample short episodes, which in most games are the bad ones.
    """
    quotas = np.full(num_envs, episodes // num_envs)
    quotas[: episodes % num_envs] += 1
    return quotas


def evaluation_env_config(env_config: EnvConfig, protocol: EvalConfig) -> EnvConfig:
    """The run's emulator settings (sticky actions, no-ops) with the evaluation's episode cap."""
    return replace(env_config, max_episode_frames=protocol.max_episode_frames)


Greedy = Callable[[list[torch.Tensor], str], list[torch.Tensor]]
"""(each player's observations, game) -> each player's greedy actions: one network, or a population's
cells in one batched forward pass (agents/population.py)."""


def play_episodes(network: QNetwork, game: str, protocol: EvalConfig, env_config: EnvConfig, seed: int) -> np.ndarray:
    """Raw scores of `protocol.episodes` episodes of `game`, in the order they ended.

    The same `seed` gives the same no-op starts (emulator i is seeded `seed + i`) and the same
    exploratory actions, so two networks scored with one seed differ only by their own play.
    """

    def greedy(frames: list[torch.Tensor], game: str) -> list[torch.Tensor]:
        return [network(frames[0], game).argmax(dim=1)]

    device = next(network.parameters()).device
    return play_episodes_together(greedy, [seed], network.num_actions, device, game, protocol, env_config)[0]


@torch.no_grad()
def play_episodes_together(
    greedy: Greedy,
    seeds: list[int],
    num_actions: int,
    device: torch.device,
    game: str,
    protocol: EvalConfig,
    env_config: EnvConfig,
) -> list[np.ndarray]:
    """`play_episodes` for several players at once, player i with `seeds[i]`: each has its own emulators
    and exploration generator, as alone, and their greedy actions come from one call of `greedy`.
    A player that has played its episodes stops (its emulators and generator with it)."""
    num_envs = min(protocol.episodes, MAX_PARALLEL_EPISODES)
    quotas = episode_quotas(protocol.episodes, num_envs)
    players = [_Player(seed, num_envs, device) for seed in seeds]
    config = evaluation_env_config(env_config, protocol)
    try:
        for player in players:
            player.start(make_env(game, num_envs, config))
        while any(player.playing(quotas) for player in players):
            actions = greedy([torch.from_numpy(player.observations).to(device) for player in players], game)
            for player, greedy_actions in zip(players, actions):
                if player.playing(quotas):
                    chosen = explore(greedy_actions, num_actions, protocol.epsilon, player.generator)
                    player.step(chosen.cpu().numpy(), quotas)
    finally:
        for player in players:
            player.close()
    return [np.array(player.scores) for player in players]


class _Player:
    """One network's evaluation: its emulators, exploration generator and scores so far."""

    def __init__(self, seed: int, num_envs: int, device: torch.device):
        self.seed = seed
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.tracker = EpisodeTracker(num_envs)
        self.played = np.zeros(num_envs, dtype=np.int64)
        self.scores: list[float] = []
        self.env = None
        self.observations: np.ndarray | None = None

    def start(self, env) -> None:
        self.env = env
        self.observations, _ = env.reset(seed=self.seed)

    def playing(self, quotas: np.ndarray) -> bool:
        return bool((self.played < quotas).any())

    def step(self, actions: np.ndarray, quotas: np.ndarray) -> None:
        self.observations, rewards, terminated, truncated, _ = self.env.step(actions)
        ended = terminated | truncated
        for env_id, (score, _length) in zip(np.flatnonzero(ended), self.tracker.step(rewards, ended)):
            if self.played[env_id] < quotas[env_id]:
                self.scores.append(score)
                self.played[env_id] += 1

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def continual_evaluation_together(
    greedy: Greedy,
    seeds: list[int],
    num_actions: int,
    device: torch.device,
    games: list[str],
    protocol: EvalConfig,
    env_config: EnvConfig,
) -> list[dict[str, float]]:
    """One evaluation of each player's current network on every game of the run, as TensorBoard scalars
    (player i with `seeds[i]`, each game played by all of them together: `play_episodes_together`).

    Returns per player `eval/<game>/score` (mean raw score), `eval/<game>/hns`, `eval/mean_hns` (over
    the sequence's games, each once), `eval/total_clipped_hns` (their sum, each clipped at 1: the
    paper's Fig. 4 metric, ewc_evaluation.metrics) and `eval/seconds` (the time they took together).
    Earlier games are scored too, not only the one being trained: their curves are where forgetting
    shows (CORA's "continual evaluation", Powers et al. 2022). Every evaluation of a run uses the
    run's seed, so successive points of a curve start from the same episodes and differ by the network alone.
    """
    started = time.perf_counter()
    scalars: list[dict[str, float]] = [{} for _ in seeds]
    hns_by_game: list[dict[str, float]] = [{} for _ in seeds]
    for game in dict.fromkeys(games):
        played = play_episodes_together(greedy, seeds, num_actions, device, game, protocol, env_config)
        for player, scores in enumerate(played):
            score = float(scores.mean())
            hns_by_game[player][game] = normalised_score(game, score)
            scalars[player][f"eval/{game}/score"] = score
            scalars[player][f"eval/{game}/hns"] = hns_by_game[player][game]
    seconds = time.perf_counter() - started
    for player, by_game in enumerate(hns_by_game):
        scalars[player]["eval/mean_hns"] = mean_hns(by_game.values())
        scalars[player]["eval/total_clipped_hns"] = total_clipped_hns(by_game.values())
        scalars[player]["eval/seconds"] = seconds
    return scalars
