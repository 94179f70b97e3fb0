"""The frame-once replay against a naive buffer that stores every full observation."""

import numpy as np
import pytest
import torch

from envs.config import EnvConfig
from agents.replay import FrameReplay, replay_bytes
from envs.atari import make_env


def fill_from_real_env(game, num_envs, capacity, steps, max_frames, seed=0):
    """Play random actions in a real ALE game; return the replay and the naive record of it."""
    env = make_env(game, num_envs, EnvConfig(max_episode_frames=max_frames))
    rng = np.random.default_rng(seed)
    observations, _ = env.reset(seed=seed)
    replay = FrameReplay(capacity, num_envs, seed=seed)
    replay.add_first(torch.from_numpy(observations))
    naive = {"obs": [observations], "action": [], "reward": [], "terminated": [], "truncated": []}
    for _ in range(steps):
        actions = rng.integers(0, 18, num_envs)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        clipped = np.clip(rewards, -1, 1).astype(np.float32)
        replay.add(torch.from_numpy(actions), torch.from_numpy(clipped), torch.from_numpy(terminated),
                   torch.from_numpy(truncated), torch.from_numpy(observations))
        for key, value in zip(("obs", "action", "reward", "terminated", "truncated"),
                              (observations, actions, clipped, terminated, truncated)):
            naive[key].append(value)
    env.close()
    return replay, {key: np.stack(value) for key, value in naive.items()}


def check_against_naive(replay, naive, draws=4000):
    """Every sampled transition equals the naive one, and none starts at a final observation."""
    ended = naive["terminated"] | naive["truncated"]  # ended[t]: o_{t+1} is a final observation
    env, t = replay.sample_indices(draws)
    batch = replay.gather(env, t)
    written = replay.observations_written
    for i, (e, step) in enumerate(zip(env.tolist(), t.tolist())):
        assert written - replay.slots <= step - 3 or step < 3, "stack reaches into overwritten frames"
        assert step <= written - 2
        assert not (step > 0 and ended[step - 1, e]), "sampled a final observation"
        assert np.array_equal(batch.s_tm1[i].numpy(), naive["obs"][step, e])
        assert np.array_equal(batch.s_t[i].numpy(), naive["obs"][step + 1, e])
        assert batch.a_tm1[i].item() == naive["action"][step, e]
        assert batch.r_t[i].item() == naive["reward"][step, e]
        assert batch.discount_t[i].item() == (0.0 if naive["terminated"][step, e] else 1.0)
    return env, t


def test_stacks_match_env_over_truncations_and_wraparound():
    # 50 slots per stream, 160 steps: the buffer wraps three times; 100-frame episodes truncate often.
    replay, naive = fill_from_real_env("pong", 3, capacity=150, steps=160, max_frames=100)
    assert naive["truncated"].sum() >= 6
    env, t = check_against_naive(replay, naive)
    assert t.min().item() >= replay.observations_written - replay.slots + 3
    assert len(set(zip(env.tolist(), t.tolist()))) > 100  # the draws spread over the buffer


def test_stacks_match_env_over_terminations():
    # Random Breakout loses its 5 lives in a few hundred steps: real terminations, no bootstrap.
    replay, naive = fill_from_real_env("breakout", 2, capacity=2000, steps=700, max_frames=108_000, seed=3)
    assert naive["terminated"].sum() >= 1
    _, t = check_against_naive(replay, naive)
    terminal_steps = {int(s) for s in np.flatnonzero(naive["terminated"].any(axis=1))}
    assert terminal_steps & set(t.tolist()), "terminal transitions are sampled too"


def test_sampling_is_seeded():
    replay_a, _ = fill_from_real_env("pong", 2, capacity=200, steps=60, max_frames=400)
    replay_b, _ = fill_from_real_env("pong", 2, capacity=200, steps=60, max_frames=400)
    assert all(torch.equal(a, b) for a, b in zip(replay_a.sample(16), replay_b.sample(16)))


def test_state_round_trip_restores_buffer_and_sampler():
    replay, _ = fill_from_real_env("pong", 2, capacity=200, steps=60, max_frames=400)
    copy = FrameReplay(200, 2)
    copy.set_state(replay.get_state())
    assert all(torch.equal(a, b) for a, b in zip(replay.sample(16), copy.sample(16)))


def test_memory_is_one_frame_per_transition():
    assert replay_bytes(1_000_000) / 1e9 == pytest.approx(7.07, abs=0.01)
    replay = FrameReplay(1000, 4)
    assert replay.frames.numel() == 1000 * 84 * 84
