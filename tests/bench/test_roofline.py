"""The benchmark's arithmetic ceiling (bench/roofline.py): the update's operations counted right, and
the ceilings worked out from them as their formulas say."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.measure import loop_ceiling, make_learner, random_replay
from bench.roofline import roofline, update_flops
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
    # at the matmul rate an update takes 0.04 s: 100 agent steps/s at 4 steps per update, 2x CleanRL's 50
    learner = {"eager": {"roofline": arithmetic}}
    assert loop_ceiling(learner, {"cleanrl_steps_per_s": 50.0}, steps_per_update=4) == pytest.approx(2.0)
