"""The replay's sampler (agents/replay.py `sample_indices`): device ops only, so a CUDA graph can capture it.

On a CPU: its picks equal a plain Python rendering of the rule for the same generator state (short
of B valid draws and with none too), its draws are uniform over valid transitions (a chi-square
test at a fixed seed), and the device bounds it reads follow the buffer in place. With CUDA: a
captured sampler, replayed while the buffer grows, draws what the eager one draws.
"""

from __future__ import annotations

import pytest
import torch

from agents.replay import FrameReplay

FRAME, HISTORY, ENVS, SLOTS = (1, 3, 3), 2, 3, 20


def filled(steps: int = 47, device: str = "cpu", seed: int = 0) -> FrameReplay:
    """A replay of random frames with random episode ends, written `steps` vector steps (20 slots a stream)."""
    replay = FrameReplay(ENVS * SLOTS, ENVS, device, seed=1, frame_shape=FRAME, history=HISTORY)
    replay.add_first(torch.zeros(ENVS, HISTORY, *FRAME[1:], dtype=torch.uint8))
    extend([replay], steps, seed)
    return replay


def extend(replays: list[FrameReplay], steps: int, seed: int) -> None:
    """The same `steps` further random vector steps into every replay of `replays`."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ends = torch.rand(ENVS, generator=generator) < 0.2
        truncated = ends & (torch.rand(ENVS, generator=generator) < 0.5)
        frames = torch.randint(0, 256, (ENVS, HISTORY, *FRAME[1:]), dtype=torch.uint8, generator=generator)
        for replay in replays:
            replay.add(torch.zeros(ENVS, dtype=torch.uint8), torch.zeros(ENVS), ends & ~truncated, truncated, frames)


def positions(replay: FrameReplay) -> tuple[int, int]:
    """(lowest, span) from the host counter, the way the buffer defines them."""
    lowest = replay._oldest_sampleable()
    return lowest, replay.observations_written - 1 - lowest


def reference_picks(replay: FrameReplay, batch_size: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """The sampling rule written out draw by draw: 2B positions uniform over the streams' sampleable range,
    the first B valid ones in draw order; short of B, the valid ones again in order; none valid, the last draw."""
    lowest, span = positions(replay)
    draws = []
    for r in torch.randint(2**62, (2 * batch_size,), generator=generator).tolist():
        p = r % (replay.num_envs * span)
        env, t = p // span, lowest + p % span
        draws.append((env, t, bool(replay.has_transition[env, t % replay.slots])))
    valid = [(env, t) for env, t, ok in draws if ok]
    if not valid:
        return [draws[-1][:2]] * batch_size
    return [valid[k % len(valid)] for k in range(batch_size)]


def sampled_picks(replay: FrameReplay, batch_size: int) -> list[tuple[int, int]]:
    env, t = replay.sample_indices(batch_size)
    return list(zip(env.tolist(), t.tolist()))


def assert_picks_match_reference(replay: FrameReplay, batch_size: int, rounds: int = 5) -> None:
    reference = torch.Generator().set_state(replay.generator.get_state())
    for _ in range(rounds):
        assert sampled_picks(replay, batch_size) == reference_picks(replay, batch_size, reference)
    assert torch.equal(replay.generator.get_state(), reference.get_state())  # the same randomness consumed


def test_picks_equal_the_rule_written_out():
    replay = filled()
    assert replay.observations_written > SLOTS  # wrapped: the lowest sampleable index is above 0
    assert not replay.has_transition.all()  # final observations are there to skip
    assert_picks_match_reference(replay, 32)


def test_short_of_valid_draws_the_valid_ones_repeat_and_with_none_the_last_draw_stands():
    replay = filled()
    lowest, span = positions(replay)
    replay.has_transition.fill_(False)
    replay.has_transition[1, (lowest + 5) % SLOTS] = True  # 2 of 3 * span positions valid: 64 draws rarely find 32
    replay.has_transition[2, (lowest + 9) % SLOTS] = True
    assert_picks_match_reference(replay, 32)
    picks = sampled_picks(replay, 32)
    assert set(picks) <= {(1, lowest + 5), (2, lowest + 9)}
    replay.has_transition.fill_(False)
    assert_picks_match_reference(replay, 32)
    assert len(set(sampled_picks(replay, 32))) == 1


def test_draws_are_uniform_over_valid_transitions():
    """Chi-square of the counts per valid position against equal counts, at a fixed seed: the statistic
    lies within 4 standard deviations (sqrt(2 dof)) of its mean dof; no invalid position is ever drawn."""
    replay = filled()
    lowest, span = positions(replay)
    valid = {(env, t) for env in range(ENVS) for t in range(lowest, lowest + span) if replay.has_transition[env, t % SLOTS]}
    assert 20 < len(valid) < ENVS * span
    counts = dict.fromkeys(valid, 0)
    for _ in range(400):
        for pick in sampled_picks(replay, 32):
            counts[pick] += 1  # a KeyError here would be an invalid or out-of-range draw
    draws, dof = 400 * 32, len(valid) - 1
    expected = draws / len(valid)
    chi_square = sum((count - expected) ** 2 / expected for count in counts.values())
    assert abs(chi_square - dof) < 4 * (2 * dof) ** 0.5, (chi_square, dof)


def test_device_bounds_follow_the_buffer_in_place():
    """`lowest` and `span` equal the host counter's range after every kind of write, in the same storage."""
    replay = FrameReplay(ENVS * SLOTS, ENVS, frame_shape=FRAME, history=HISTORY)
    storage = (replay.lowest.data_ptr(), replay.span.data_ptr())
    replay.add_first(torch.zeros(ENVS, HISTORY, *FRAME[1:], dtype=torch.uint8))
    for steps in (1, 10, 30):  # before and after the buffer wraps
        extend([replay], steps, seed=steps)
        assert (int(replay.lowest), int(replay.span)) == positions(replay)
    replay.add_restart(torch.zeros(ENVS, HISTORY, *FRAME[1:], dtype=torch.uint8))
    assert (int(replay.lowest), int(replay.span)) == positions(replay)
    copy = FrameReplay(ENVS * SLOTS, ENVS, frame_shape=FRAME, history=HISTORY)
    copy.set_state(replay.get_state())
    assert (int(copy.lowest), int(copy.span)) == positions(replay)
    assert (replay.lowest.data_ptr(), replay.span.data_ptr()) == storage


def test_an_empty_replay_refuses_to_sample():
    replay = FrameReplay(ENVS * SLOTS, ENVS, frame_shape=FRAME, history=HISTORY)
    replay.add_first(torch.zeros(ENVS, HISTORY, *FRAME[1:], dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="no complete transition"):
        replay.sample_indices(4)


@pytest.mark.cuda
def test_a_captured_sampler_draws_what_the_eager_one_draws_while_the_buffer_grows():
    """Two equal replays on the GPU: one samples eagerly, the other replays a graph captured once;
    between draws both store the same new steps (the bounds move, the buffer wraps). Same picks,
    same transitions, same generator state after."""
    eager, graphed = filled(device="cuda"), filled(device="cuda")
    warm = filled(device="cuda")  # its kernels load before the capture, as PyTorch's recipe asks
    warm.gather(*warm.sample_indices(32))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(graphed.generator)
    before = graphed.generator.get_state()
    with torch.cuda.graph(graph):
        env, t = graphed.sample_indices(32)
        batch = graphed.gather(env, t)
    assert torch.equal(graphed.generator.get_state(), before)  # capturing draws nothing
    for round_ in range(6):
        extend([eager, graphed], 7, seed=100 + round_)
        graph.replay()
        expected_env, expected_t = eager.sample_indices(32)
        assert torch.equal(env, expected_env) and torch.equal(t, expected_t), round_
        assert all(torch.equal(a, b) for a, b in zip(batch, eager.gather(expected_env, expected_t)))
    assert torch.equal(graphed.generator.get_state(), eager.generator.get_state())
