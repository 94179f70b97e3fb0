"""The evaluation protocol against the same seeded emulators stepped by hand."""

from __future__ import annotations

import pytest
import torch

from agents.build import build_network
from agents.config import NetworkConfig
from agents.dqn import epsilon_greedy
from envs.config import EnvConfig
from envs.families import family_of, make_env
from ewc_evaluation.config import EvalConfig
from ewc_evaluation.protocol import MAX_PARALLEL_EPISODES, evaluation_env_config, play_episodes


def by_hand(network, game: str, protocol: EvalConfig, env_config: EnvConfig, seed: int) -> tuple[list[list[float]], list[int]]:
    """Every emulator's episode scores: the rewards of its steps summed, from the first step after a
    reset to the step that ends the episode; the step after an end (it returns the reset
    observation and ignores the action) belongs to no episode."""
    num_envs = min(protocol.episodes, MAX_PARALLEL_EPISODES)
    wanted = [protocol.episodes // num_envs + (i < protocol.episodes % num_envs) for i in range(num_envs)]
    env = make_env(game, num_envs, evaluation_env_config(env_config, protocol))
    generator = torch.Generator().manual_seed(seed)
    observations, _ = env.reset(seed=seed)
    scores: list[list[float]] = [[] for _ in range(num_envs)]
    running, resetting = [0.0] * num_envs, [False] * num_envs
    while any(len(scores[i]) < wanted[i] for i in range(num_envs)):
        actions = epsilon_greedy(network, torch.from_numpy(observations), game, protocol.epsilon, generator)
        observations, rewards, terminated, truncated, _ = env.step(actions.numpy())
        for i in range(num_envs):
            if resetting[i]:
                resetting[i] = False
                assert rewards[i] == 0 and not (terminated[i] or truncated[i])
                continue
            running[i] += float(rewards[i])
            if terminated[i] or truncated[i]:
                scores[i].append(running[i])
                running[i], resetting[i] = 0.0, True
    env.close()
    return scores, wanted


@pytest.mark.parametrize(
    "game, episodes, frames",
    [
        pytest.param("pong", 3, 800, marks=pytest.mark.slow),  # 200 agent steps: Pong's opponent scores a few points
        ("minatar:space_invaders", MAX_PARALLEL_EPISODES + 3, 100),  # 3 emulators play a second episode
    ],
)
def test_episode_scores_are_the_summed_rewards_of_the_same_emulators_stepped_by_hand(game, episodes, frames):
    family = family_of(game)
    architecture = "minatar" if family.name == "minatar" else "nature"
    torch.manual_seed(0)
    network = build_network(NetworkConfig(architecture=architecture), [game], family)
    protocol = EvalConfig(episodes=episodes, epsilon=0.3, max_episode_frames=frames)
    env_config = EnvConfig(sticky_action_prob=0.1 if family.name == "minatar" else 0.0)
    played = play_episodes(network, game, protocol, env_config, seed=11)
    per_emulator, wanted = by_hand(network, game, protocol, env_config, seed=11)
    expected = [score for scores, count in zip(per_emulator, wanted) for score in scores[:count]]
    assert len(played) == episodes == sum(wanted)
    assert sorted(played.tolist()) == sorted(expected)
    assert any(score != 0 for score in expected)  # rewards were summed, not only counted
    if max(wanted) > 1:  # a second episode starts from 0, whatever the first scored
        assert any(scores[0] != 0 for scores, count in zip(per_emulator, wanted) if count > 1)
