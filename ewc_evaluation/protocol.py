"""Scoring a network on Atari games, the same way while training and in evaluate.py.

The protocol is the one behind published Atari scores (Mnih et al. 2015; Machado et al. 2018):
the raw game score (no reward clipping), whole games (a lost life does not end the episode), up
to 30 no-op actions at the start, epsilon-greedy actions with a small epsilon (0.05), and episodes
cut at 108,000 frames (30 minutes of play). Each game gets its own vector environment, separate
from the one being trained on, and its episodes run in parallel, one per emulator.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from agents.dqn import epsilon_greedy
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


def play_episodes(network: QNetwork, game: str, protocol: EvalConfig, env_config: EnvConfig, seed: int) -> np.ndarray:
    """Raw scores of `protocol.episodes` episodes of `game`, in the order they ended.

    The same `seed` gives the same no-op starts (emulator i is seeded `seed + i`) and the same
    exploratory actions, so two networks scored with one seed differ only by their own play.
    """
    num_envs = min(protocol.episodes, MAX_PARALLEL_EPISODES)
    quotas = episode_quotas(protocol.episodes, num_envs)
    played = np.zeros(num_envs, dtype=np.int64)
    device = next(network.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    tracker = EpisodeTracker(num_envs)
    scores: list[float] = []
    env = make_env(game, num_envs, evaluation_env_config(env_config, protocol))
    try:
        observations, _ = env.reset(seed=seed)
        while (played < quotas).any():
            frames = torch.from_numpy(observations).to(device)
            actions = epsilon_greedy(network, frames, game, protocol.epsilon, generator)
            observations, rewards, terminated, truncated, _ = env.step(actions.cpu().numpy())
            ended = terminated | truncated
            for env_id, (score, _length) in zip(np.flatnonzero(ended), tracker.step(rewards, ended)):
                if played[env_id] < quotas[env_id]:
                    scores.append(score)
                    played[env_id] += 1
    finally:
        env.close()
    return np.array(scores)


def continual_evaluation(
    network: QNetwork, games: list[str], protocol: EvalConfig, env_config: EnvConfig, seed: int
) -> dict[str, float]:
    """One evaluation of the current network on every game of the run, as TensorBoard scalars.

    Returns `eval/<game>/score` (mean raw score), `eval/<game>/hns`, `eval/mean_hns` (over the
    sequence's games, each once), `eval/total_clipped_hns` (their sum, each clipped at 1: the
    paper's Fig. 4 metric, ewc_evaluation.metrics) and `eval/seconds`. Earlier games are scored too, not only the
    one being trained: their curves are where forgetting shows (CORA's "continual evaluation",
    Powers et al. 2022). Every evaluation of a run uses the run's seed, so successive points of a
    curve start from the same episodes and differ by the network alone.
    """
    started = time.perf_counter()
    scalars: dict[str, float] = {}
    hns_by_game: dict[str, float] = {}
    for game in dict.fromkeys(games):
        score = float(play_episodes(network, game, protocol, env_config, seed).mean())
        hns_by_game[game] = normalised_score(game, score)
        scalars[f"eval/{game}/score"] = score
        scalars[f"eval/{game}/hns"] = hns_by_game[game]
    scalars["eval/mean_hns"] = mean_hns(hns_by_game.values())
    scalars["eval/total_clipped_hns"] = total_clipped_hns(hns_by_game.values())
    scalars["eval/seconds"] = time.perf_counter() - started
    return scalars
