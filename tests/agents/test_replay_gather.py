"""The replay rebuilds both observations of a batch in one pass (agents/replay.py `_stack_pair`); here it
is checked against the rule written out frame by frame, over episode ends and wrap-around."""

from __future__ import annotations

import pytest
import torch

from agents.replay import FrameReplay


def reference_stack(replay: FrameReplay, env: int, t: int) -> torch.Tensor:
    """o_t: frames t-L+1..t of stream `env` along channels, each zeroed when an episode starts after it (up to t)."""
    layers, keep = [], True
    for k in range(replay.history):
        if k > 0:
            keep = keep and not bool(replay.episode_start[env, (t - k + 1) % replay.slots])
        frame = replay.frames[env, (t - k) % replay.slots]
        layers.append(frame if keep else torch.zeros_like(frame))
    return torch.cat(layers[::-1])


@pytest.mark.parametrize("frame_shape, history", [((1, 84, 84), 4), ((3, 5, 7), 4), ((10, 10, 10), 1)])
def test_stack_pair_matches_the_layer_by_layer_rule(frame_shape, history):
    generator = torch.Generator().manual_seed(0)
    num_envs, replay = 3, FrameReplay(3 * 20, 3, frame_shape=frame_shape, history=history)
    channels = history * frame_shape[0]

    def frames():
        return torch.randint(0, 256, (num_envs, channels) + frame_shape[1:], dtype=torch.uint8, generator=generator)

    replay.add_first(frames())
    for _ in range(47):  # more than the 20 slots per stream: the buffer wraps twice
        ends = torch.rand(num_envs, generator=generator) < 0.25
        truncated = ends & (torch.rand(num_envs, generator=generator) < 0.5)
        replay.add(
            torch.randint(18, (num_envs,), generator=generator),
            torch.randn(num_envs, generator=generator),
            ends & ~truncated,
            truncated,
            frames(),
        )
    lowest = replay._oldest_sampleable()
    positions = [(env, t) for env in range(num_envs) for t in range(lowest, replay.observations_written - 1)]
    env, t = (torch.tensor(column) for column in zip(*positions))
    batch = replay.gather(env, t)
    assert batch.s_tm1.shape == (len(positions), channels) + frame_shape[1:]
    assert int(replay.episode_start.sum()) > 5  # the rule is exercised, not only the plain case
    for index, (e, position) in enumerate(positions):
        assert torch.equal(batch.s_tm1[index], reference_stack(replay, e, position))
        assert torch.equal(batch.s_t[index], reference_stack(replay, e, position + 1))
