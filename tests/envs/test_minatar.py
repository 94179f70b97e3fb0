"""The MinAtar vector adapter against raw `minatar.Environment`s stepped by hand with the same actions."""

import numpy as np
import pytest
from minatar import Environment

from envs.minatar import CHANNELS, GAMES, NUM_ACTIONS, SIDE, MinAtarVectorEnv


class HandStepped:
    """N raw emulators seeded seed + i, with NEXT_STEP autoreset and a time limit written out plainly."""

    def __init__(self, game, num_envs, seed, max_episode_steps, **kwargs):
        self.envs = [Environment(game, **kwargs) for _ in range(num_envs)]
        self.limit = max_episode_steps
        self.ended = [False] * num_envs
        self.steps = [0] * num_envs
        for i, env in enumerate(self.envs):
            env.seed(seed + i)
            self.begin(i)

    def begin(self, i):
        self.envs[i].reset()
        self.envs[i].last_action = 0  # the adapter's one deliberate difference from minatar's reset
        self.steps[i] = 0

    def observation(self, i):
        state = self.envs[i].state()  # bool (10, 10, C)
        padded = np.zeros((CHANNELS, SIDE, SIDE), dtype=np.uint8)
        for c in range(state.shape[2]):
            padded[c] = state[:, :, c]
        return padded

    def step(self, i, action):
        """(observation, reward, terminated, truncated) of emulator i."""
        if self.ended[i]:
            self.ended[i] = False
            self.begin(i)
            return self.observation(i), 0.0, False, False
        reward, terminal = self.envs[i].act(action)
        self.steps[i] += 1
        truncated = not terminal and self.steps[i] == self.limit
        self.ended[i] = terminal or truncated
        return self.observation(i), reward, terminal, truncated


def play_both(game, num_envs, steps, seed=0, max_episode_steps=10_000, **kwargs):
    """Step the adapter and the hand-stepped emulators together; assert equal at every step."""
    adapter = MinAtarVectorEnv(game, num_envs, max_episode_steps=max_episode_steps, **kwargs)
    reference = HandStepped(game, num_envs, seed, max_episode_steps, **kwargs)
    observations, _ = adapter.reset(seed=seed)
    assert np.array_equal(observations, np.stack([reference.observation(i) for i in range(num_envs)]))
    rng = np.random.default_rng(seed)
    counts = {"terminated": 0, "truncated": 0, "reward": 0.0}
    for _ in range(steps):
        actions = rng.integers(0, NUM_ACTIONS, num_envs)
        observations, rewards, terminated, truncated, _ = adapter.step(actions)
        for i in range(num_envs):
            obs, reward, term, trunc = reference.step(i, int(actions[i]))
            assert np.array_equal(observations[i], obs)
            assert (rewards[i], terminated[i], truncated[i]) == (reward, term, trunc)
        counts["terminated"] += int(terminated.sum())
        counts["truncated"] += int(truncated.sum())
        counts["reward"] += float(rewards.sum())
    adapter.close()
    return counts


@pytest.mark.parametrize("game", GAMES)
def test_matches_raw_emulators_over_autoresets(game):
    counts = play_both(game, 3, 300, seed=5, max_episode_steps=120)  # freeway's own limit is 2,500
    assert counts["terminated"] + counts["truncated"] >= 3


def test_matches_raw_emulators_over_terminations_and_truncations():
    # Random breakout ends in tens of steps; a 25-step limit cuts the longer episodes.
    counts = play_both("breakout", 4, 400, seed=11, max_episode_steps=25)
    assert counts["terminated"] >= 5 and counts["truncated"] >= 5


def test_truncation_and_reset_step_by_step():
    env = MinAtarVectorEnv("space_invaders", 2, max_episode_steps=3)  # a random invader survives 3 steps
    first, _ = env.reset(seed=0)
    for _ in range(2):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.int64))
        assert not terminated.any() and not truncated.any()
    _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and not terminated.any() and info["episode_frame_number"].tolist() == [3, 3]
    observations, rewards, terminated, truncated, info = env.step(np.full(2, 5))  # ignored: resets
    assert not terminated.any() and not truncated.any() and rewards.tolist() == [0.0, 0.0]
    assert info["episode_frame_number"].tolist() == [0, 0]
    assert observations.sum() > 0


def test_termination_on_the_last_allowed_step_is_terminated():
    # Find a breakout episode's length, then replay it with exactly that limit.
    env = MinAtarVectorEnv("breakout", 1, sticky_action_prob=0.0)
    env.reset(seed=3)
    length, terminated = 0, np.zeros(1, dtype=bool)
    while not terminated[0]:
        _, _, terminated, _, _ = env.step(np.zeros(1, dtype=np.int64))
        length += 1
    limited = MinAtarVectorEnv("breakout", 1, sticky_action_prob=0.0, max_episode_steps=length)
    limited.reset(seed=3)
    for _ in range(length):
        _, _, terminated, truncated, _ = limited.step(np.zeros(1, dtype=np.int64))
    assert terminated[0] and not truncated[0]


@pytest.mark.parametrize("game", GAMES)
def test_observations_are_padded_uint8_chw(game):
    env = MinAtarVectorEnv(game, 2)
    observations, info = env.reset(seed=0)
    n_channels = Environment(game).n_channels
    assert env.game_channels == n_channels
    for obs in (observations, env.step(np.ones(2, dtype=np.int64))[0]):
        assert obs.shape == (2, CHANNELS, SIDE, SIDE) and obs.dtype == np.uint8
        assert set(np.unique(obs)) <= {0, 1}
        assert not obs[:, n_channels:].any()
    assert info["env_id"].tolist() == [0, 1]
    _, rewards, terminated, truncated, _ = env.step(np.ones(2, dtype=np.int64))
    assert rewards.dtype == np.float32 and rewards.shape == (2,)
    assert terminated.dtype == truncated.dtype == np.bool_ and terminated.shape == truncated.shape == (2,)


def test_sticky_actions_and_ramping_are_passed_through():
    env = MinAtarVectorEnv("asterix", 2, sticky_action_prob=0.25, difficulty_ramping=False)
    assert all(raw.sticky_action_prob == 0.25 and raw.env.ramping is False for raw in env.envs)
    default = MinAtarVectorEnv("asterix", 1)
    assert default.envs[0].sticky_action_prob == 0.1 and default.envs[0].env.ramping is True
    assert play_both("asterix", 2, 200, seed=2, sticky_action_prob=0.25, difficulty_ramping=False)["terminated"] > 0


def test_reset_with_a_seed_replays_the_same_episodes():
    env = MinAtarVectorEnv("seaquest", 2)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, NUM_ACTIONS, (100, 2))
    runs = []
    for _ in range(2):  # the second reset comes after 100 steps with sticky-action memory set
        runs.append([env.reset(seed=7)[0]] + [env.step(a)[0] for a in actions])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    first, second = (np.stack([obs[i] for obs in runs[0]]) for i in (0, 1))
    assert not np.array_equal(first, second)  # the two emulators get different seeds


def test_unknown_game_and_misuse_raise():
    with pytest.raises(ValueError, match="unknown MinAtar game"):
        MinAtarVectorEnv("pong", 2)
    env = MinAtarVectorEnv("freeway", 2)
    env.reset(seed=0)
    with pytest.raises(RuntimeError):
        env.recv()
    with pytest.raises(ValueError):
        env.send(np.zeros(3, dtype=np.int64))
