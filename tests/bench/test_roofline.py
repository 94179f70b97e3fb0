"""The benchmark's arithmetic ceiling (bench/roofline.py): the update's operations counted right, and
the ceilings worked out from them as their formulas say."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from bench.build import make_learner, random_replay
from bench.peer import loop_ceiling, peer_verdict
from bench.roofline import GEMM_SIDES, gemm_gflops, matmul_repeats, roofline, update_flops
from bench.settings import Settings, benchmark_config, minatar_config
from envs.families import family_of_run

SMALL = Settings.for_device(torch.device("cpu"), quick=True)


def multiply_adds_per_sample(network: nn.Module) -> tuple[int, int]:
    """Multiply-adds of one forward pass of one observation, and those of the first layer alone,
    from the layers' shapes: a convolution does in_channels x k x k per output value, a linear layer
    in_features per output."""
    side, first, total = network.input_shape[1], None, 0
    for layer in network.layers:
        if isinstance(layer, nn.Conv2d):
            (kernel, _), (stride, _) = layer.kernel_size, layer.stride
            side = (side - kernel) // stride + 1
            count = side * side * layer.out_channels * layer.in_channels * kernel * kernel
        else:
            count = layer.in_features * layer.out_features
        first = count if first is None else first
        total += count
    return total, first


@pytest.mark.parametrize("make_config", [benchmark_config, minatar_config], ids=["nature", "minatar"])
def test_an_update_counts_three_forward_passes_and_a_backward_pass(make_config):
    """F = 2 x batch x (3 M + M + (M - M_1)): three forward passes (online s, online s', target s'),
    the weight gradients of every layer (M) and the input gradients of every layer but the first
    (its input is the observation)."""
    config = make_config(SMALL)
    learner = make_learner(config, torch.device("cpu"), "eager", penalty=False)
    replay = random_replay(256, 2, torch.device("cpu"), family_of_run(config.run.games))
    total, first = multiply_adds_per_sample(learner.online)
    batch_size = config.agent.batch_size
    assert update_flops(learner, replay.sample(batch_size), config.run.games[0]) == 2 * batch_size * (5 * total - first)
    assert learner.updates == 1  # the counted update is a real one


def test_roofline_and_loop_ceiling_follow_their_formulas():
    # 2.8 GFLOP in 0.05 s is 56 GFLOP/s; against a 70 GFLOP/s matmul that is 80%, a ceiling of 1.25x
    arithmetic = roofline(2.8e9, 0.05, 70.0)
    assert arithmetic["achieved_gflops"] == pytest.approx(56.0)
    assert arithmetic["share_of_gemm_rate"] == pytest.approx(0.8)
    assert arithmetic["float32_ceiling"] == pytest.approx(1.25)
    # at the matmul rate an update takes 0.04 s: 100 agent steps/s at 4 steps per update, against
    # CleanRL's 50, 40 and 25 steps/s in three rounds: ratios 2, 2.5 and 4, median 2.5
    learner = {"eager": {"roofline": arithmetic}}
    rounds = [{"cleanrl_steps_per_s": rate} for rate in (50.0, 40.0, 25.0)]
    assert loop_ceiling(learner, {"rounds": rounds}, steps_per_update=4) == pytest.approx(2.5)


def test_the_gemm_rate_is_the_best_timing_over_every_size(monkeypatch):
    """A clock that advances 1 s per reading: every timing takes 1 s, so the best rate is the size
    with the most operations per timing."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    expected = max(2 * side**3 * matmul_repeats(side) for side in GEMM_SIDES) / 1e9
    assert gemm_gflops(rounds=2) == pytest.approx(expected)


def section(
    gflop: float, gemm: float, seconds: float, speedup: float, cleanrl: list[float], loop_speedup: float
) -> tuple[dict, dict]:
    """A made-up (learner, end_to_end) pair of a benchmark record."""
    learner = {"eager": {"roofline": roofline(gflop * 1e9, seconds, gemm)}, "speedup_over_eager": speedup}
    end_to_end = {"rounds": [{"cleanrl_steps_per_s": rate} for rate in cleanrl], "speedup_over_cleanrl": loop_speedup}
    return learner, end_to_end


def test_peer_verdict_puts_each_ceiling_beside_its_own_ratio():
    # Atari: ceiling 70 x 0.05 / 2.8 = 1.25 (unreachable); loop 4 x 70 / 2.8 = 100 steps/s over 80 -> 1.25
    atari_learner, atari_loop = section(2.8, 70.0, 0.05, 1.1, [80.0], 1.3)
    # MinAtar: ceiling 70 x 0.005 / 0.07 = 5 (reachable); loop 4 x 70 / 0.07 = 4,000 over 400 -> 10
    minatar_learner, minatar_loop = section(0.07, 70.0, 0.005, 1.2, [400.0], 1.1)
    record = {
        "learner": atari_learner,
        "end_to_end": atari_loop,
        "minatar": {"learner": minatar_learner, "end_to_end": minatar_loop},
    }
    peer = peer_verdict(record, steps_per_update=4)
    assert peer["float32_ceilings"] == pytest.approx(
        {
            "atari_learner_over_eager": 1.25,
            "atari_loop_over_cleanrl": 1.25,
            "minatar_learner_over_eager": 5.0,
            "minatar_loop_over_cleanrl": 10.0,
        }
    )
    assert peer["reachable"] == {
        "atari_learner_over_eager": False,
        "atari_loop_over_cleanrl": False,
        "minatar_learner_over_eager": True,
        "minatar_loop_over_cleanrl": True,
    }
    # the Atari loop's 1.3x is past its 1.25x ceiling: the matmul rate was measured too low
    assert [key for key, exceeded in peer["ceiling_exceeded"].items() if exceeded] == ["atari_loop_over_cleanrl"]
    assert not any(peer["passed"].values())


def test_only_an_eager_update_is_counted():
    config = minatar_config(SMALL)
    learner = make_learner(config, torch.device("cpu"), "eager", penalty=False)
    learner.update_mode = "compiled"  # as a compiled learner reports itself
    replay = random_replay(256, 2, torch.device("cpu"), family_of_run(config.run.games))
    with pytest.raises(ValueError, match="counts an eager update"):
        update_flops(learner, replay.sample(32), config.run.games[0])
