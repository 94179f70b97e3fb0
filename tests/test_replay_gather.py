"""The replay rebuilds both stacks of a batch in one pass (agents/replay.py `_stack_pair`); here it is
checked against the rule written out layer by layer, over episode ends and wrap-around."""

from __future__ import annotations

import torch

from agents.replay import STACK, FrameReplay


def reference_stack(replay: FrameReplay, env: int, t: int) -> torch.Tensor:
    """o_t: frames t-3..t of stream `env`, each zeroed when an episode starts after it (up to t)."""
    layers, keep = [], True
    for k in range(STACK):
        if k > 0:
            keep = keep and not bool(replay.episode_start[env, (t - k + 1) % replay.slots])
        frame = replay.frames[env, (t - k) % replay.slots]
        layers.append(frame if keep else torch.zeros_like(frame))
    return torch.stack(layers[::-1])


def test_stack_pair_matches_the_layer_by_layer_rule():
    generator = torch.Generator().manual_seed(0)
    num_envs, replay = 3, FrameReplay(3 * 20, 3)

    def frames():
        return torch.randint(0, 256, (num_envs, 4, 84, 84), dtype=torch.uint8, generator=generator)

    replay.add_first(frames())
    for _ in range(47):  # more than the 20 slots per stream: the buffer wraps twice
        ends = torch.rand(num_envs, generator=generator) < 0.25
        truncated = ends & (torch.rand(num_envs, generator=generator) < 0.5)
        replay.add(torch.randint(18, (num_envs,), generator=generator), torch.randn(num_envs, generator=generator),
                   ends & ~truncated, truncated, frames())
    lowest = replay._oldest_sampleable()
    positions = [(env, t) for env in range(num_envs) for t in range(lowest, replay.observations_written - 1)]
    env, t = (torch.tensor(column) for column in zip(*positions))
    batch = replay.gather(env, t)
    assert int(replay.episode_start.sum()) > 5  # the rule is exercised, not only the plain case
    for index, (e, position) in enumerate(positions):
        assert torch.equal(batch.s_tm1[index], reference_stack(replay, e, position))
        assert torch.equal(batch.s_t[index], reference_stack(replay, e, position + 1))
