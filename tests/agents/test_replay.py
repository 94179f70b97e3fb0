"""The frame-once replay against a naive buffer that stores every full observation."""

import numpy as np
import pytest
import torch

from agents.replay import FrameReplay, replay_bytes
from envs.atari import make_env
from envs.config import EnvConfig
from envs.minatar import CHANNELS, SIDE, MinAtarVectorEnv


class StackingEnv:
    """A vector env of random (C, H, W) frames with ale-py's observation rule written out plainly:
    the last `history` frames concatenated along channels, zeros before an episode's first frame,
    random episode ends, NEXT_STEP autoreset (the step after an end ignores the action and resets)."""

    def __init__(self, num_envs, frame_shape, history, end_probability=0.15):
        self.num_envs, self.frame_shape, self.history = num_envs, frame_shape, history
        self.end_probability = end_probability

    def reset(self, seed):
        self.rng = np.random.default_rng(seed)
        self.stacks = np.zeros((self.num_envs, self.history) + self.frame_shape, dtype=np.uint8)
        self.ended = np.zeros(self.num_envs, dtype=bool)
        for i in range(self.num_envs):
            self.push(i)
        return self.observations(), {}

    def push(self, i):
        self.stacks[i, :-1] = self.stacks[i, 1:].copy()
        self.stacks[i, -1] = self.rng.integers(0, 256, self.frame_shape, dtype=np.uint8)

    def observations(self):
        return self.stacks.reshape(self.num_envs, -1, *self.frame_shape[1:]).copy()

    def step(self, actions):
        rewards = self.rng.normal(size=self.num_envs).astype(np.float32)
        ends = self.rng.random(self.num_envs) < self.end_probability
        terminated = ends & (self.rng.random(self.num_envs) < 0.5)
        truncated = ends & ~terminated
        for i in range(self.num_envs):
            if self.ended[i]:
                self.stacks[i] = 0
                rewards[i], terminated[i], truncated[i] = 0.0, False, False
            self.push(i)
        self.ended = terminated | truncated
        return self.observations(), rewards, terminated, truncated, {}

    def close(self):
        pass


def fill_from_real_env(game, num_envs, capacity, steps, max_frames, seed=0, device="cpu"):
    """Play random actions in a real ALE game; return the replay and the naive record of it."""
    env = make_env(game, num_envs, EnvConfig(max_episode_frames=max_frames))
    return fill(env, FrameReplay(capacity, num_envs, device, seed=seed), 18, steps, seed)


def fill(env, replay, num_actions, steps, seed):
    """Play random actions in `env` into `replay`; return the replay and the naive record of it."""
    num_envs = replay.num_envs
    rng = np.random.default_rng(seed)
    observations, _ = env.reset(seed=seed)
    replay.add_first(torch.from_numpy(observations))
    naive = {"obs": [observations], "action": [], "reward": [], "terminated": [], "truncated": []}
    for _ in range(steps):
        actions = rng.integers(0, num_actions, num_envs)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        clipped = np.clip(rewards, -1, 1).astype(np.float32)
        replay.add(
            torch.from_numpy(actions),
            torch.from_numpy(clipped),
            torch.from_numpy(terminated),
            torch.from_numpy(truncated),
            torch.from_numpy(observations),
        )
        for key, value in zip(
            ("obs", "action", "reward", "terminated", "truncated"), (observations, actions, clipped, terminated, truncated)
        ):
            naive[key].append(value)
    env.close()
    return replay, {key: np.stack(value) for key, value in naive.items()}


def check_against_naive(replay, naive, draws=4000):
    """Every sampled transition equals the naive one, and none starts at a final observation."""
    ended = naive["terminated"] | naive["truncated"]  # ended[t]: o_{t+1} is a final observation
    env, t = replay.sample_indices(draws)
    batch = replay.gather(env, t)
    assert all(tensor.device.type == replay.device.type for tensor in (*batch, env, t))
    batch = type(batch)(*(tensor.cpu() for tensor in batch))
    written = replay.observations_written
    for i, (e, step) in enumerate(zip(env.tolist(), t.tolist())):
        older = replay.history - 1  # frames before f_t in o_t
        assert written - replay.slots <= step - older or step < older, "stack reaches into overwritten frames"
        assert step <= written - 2
        assert not (step > 0 and ended[step - 1, e]), "sampled a final observation"
        assert np.array_equal(batch.s_tm1[i].numpy(), naive["obs"][step, e])
        assert np.array_equal(batch.s_t[i].numpy(), naive["obs"][step + 1, e])
        assert batch.a_tm1[i].item() == naive["action"][step, e]
        assert batch.r_t[i].item() == naive["reward"][step, e]
        assert batch.discount_t[i].item() == (0.0 if naive["terminated"][step, e] else 1.0)
    return env, t


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_stacks_match_env_over_truncations_and_wraparound(device):
    # 50 slots per stream, 160 steps: the buffer wraps three times; 100-frame episodes truncate often.
    replay, naive = fill_from_real_env("pong", 3, capacity=150, steps=160, max_frames=100, device=device)
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


def continue_both(replays, steps, seed):
    """Store the same further real Pong steps in every replay of `replays` (the streams go on)."""
    env = make_env("pong", replays[0].num_envs, EnvConfig(max_episode_frames=400))
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(steps):
        actions = rng.integers(0, 18, replays[0].num_envs)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        for replay in replays:
            step = (actions, np.clip(rewards, -1, 1).astype(np.float32), terminated, truncated, observations)
            replay.add(*(torch.from_numpy(x) for x in step))
    env.close()


def test_state_round_trip_restores_buffer_and_sampler():
    """A copy built with another seed, restored from a replay whose sampler has moved on, then both
    continue: every field and every later sample agree (the episode flags and generator included)."""
    # 400-frame episodes end at the 100th step: the restored replay must know the next observation
    # starts an episode (the ended flags are part of the state, not only the buffers)
    replay, _ = fill_from_real_env("pong", 2, capacity=200, steps=100, max_frames=400)
    assert replay.get_state()["previous_ended"].all()
    replay.sample(16)  # the generator is no longer at its seed
    copy = FrameReplay(200, 2, seed=12345)
    copy.set_state(replay.get_state())
    continue_both([replay, copy], steps=30, seed=9)  # 100 slots per stream: the buffer wraps around
    assert replay.observations_written == copy.observations_written == 131
    original, restored = replay.get_state(), copy.get_state()
    assert original.keys() == restored.keys()
    for name, value in original.items():
        assert torch.equal(value, restored[name]) if isinstance(value, torch.Tensor) else value == restored[name], name
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(replay.sample(16), copy.sample(16)))


def test_memory_is_one_frame_per_transition():
    """84x84 uint8 frames, each stored once: 7,056 B a transition, plus 8 B of action, reward and flags."""
    assert replay_bytes(1_000_000) / 1e9 == pytest.approx(7.07, abs=0.01)
    replay = FrameReplay(1000, 4)
    assert replay.frames.dtype == torch.uint8 and replay.frames.shape == (4, 250, 1, 84, 84)
    per_slot = [replay.frames, replay.actions, replay.rewards, replay.terminated, replay.has_transition, replay.episode_start]
    stored = sum(tensor.numel() * tensor.element_size() for tensor in per_slot)
    assert stored == 1000 * (84 * 84 + 1 + 4 + 3)
    assert replay_bytes(1000) == stored  # the estimate launch.py checks memory with


@pytest.mark.parametrize("game, limit", [("breakout", 12), ("space_invaders", 20)])
def test_minatar_observations_match_env_over_ends_and_wraparound(game, limit):
    # History 1: o_t is frame t itself. 40 slots per stream, 130 steps: the buffer wraps three times.
    env = MinAtarVectorEnv(game, 3, max_episode_steps=limit)
    replay = FrameReplay(120, 3, seed=1, frame_shape=(CHANNELS, SIDE, SIDE), history=1)
    replay, naive = fill(env, replay, 6, 130, seed=4)
    assert naive["truncated"].sum() >= 3 and naive["terminated"].sum() >= 1
    _, t = check_against_naive(replay, naive)
    assert t.min().item() >= replay.observations_written - replay.slots
    assert replay.sample(8).s_tm1.shape == (8, CHANNELS, SIDE, SIDE)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("frame_shape, history", [((3, 5, 7), 4), ((2, 6, 6), 2), ((1, 84, 84), 4)])
def test_multichannel_stacks_match_env_over_ends_and_wraparound(frame_shape, history, device):
    replay = FrameReplay(90, 3, device, seed=2, frame_shape=frame_shape, history=history)
    replay, naive = fill(StackingEnv(3, frame_shape, history), replay, 6, 100, seed=5)
    assert naive["terminated"].sum() >= 5 and naive["truncated"].sum() >= 5
    _, t = check_against_naive(replay, naive)
    assert t.min().item() >= replay.observations_written - replay.slots + history - 1


def test_replay_saved_before_frames_had_channels_still_loads():
    replay, _ = fill(StackingEnv(2, (1, 84, 84), 4), FrameReplay(60, 2, seed=3), 18, 70, seed=6)
    state = replay.get_state()
    state["frames"] = state["frames"].squeeze(2)  # the old layout: (N, slots, 84, 84)
    assert state["frames"].shape == (2, 30, 84, 84)
    copy = FrameReplay(60, 2)
    copy.set_state(state)
    assert torch.equal(copy.frames, replay.frames)
    assert all(torch.equal(a, b) for a, b in zip(replay.sample(16), copy.sample(16)))
    with pytest.raises(RuntimeError):  # a MinAtar replay does not take it
        FrameReplay(60, 2, frame_shape=(10, 10, 10), history=1).set_state(state)


def test_observations_of_another_shape_are_refused():
    replay = FrameReplay(60, 2, frame_shape=(10, 10, 10), history=1)
    with pytest.raises(ValueError, match="this replay stores"):
        replay.add_first(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))


def test_minatar_memory_is_one_frame_per_transition():
    assert replay_bytes(1_000_000, (10, 10, 10)) == 1_008_000_000
    replay = FrameReplay(1000, 4, frame_shape=(10, 10, 10), history=1)
    assert replay.frames.shape == (4, 250, 10, 10, 10)
