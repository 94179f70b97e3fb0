"""Network kinds: output shapes, input scaling, and the Atari networks' parameters exactly as before."""

import pytest
import torch
from torch.nn import functional as F

from agents.network import QNetwork

NATURE_STATE = {  # written out by hand: checkpoints saved before input shapes were configurable must load
    "layers.0.weight": (32, 4, 8, 8),
    "layers.0.bias": (32,),
    "layers.1.weight": (64, 32, 4, 4),
    "layers.1.bias": (64,),
    "layers.2.weight": (64, 64, 3, 3),
    "layers.2.bias": (64,),
    "layers.3.weight": (512, 3136),
    "layers.3.bias": (512,),
    "layers.4.weight": (18, 512),
    "layers.4.bias": (18,),
}


def test_nature_state_dict_is_unchanged():
    state = QNetwork(modulated_games=["pong"]).state_dict()
    widths = (32, 64, 64, 512, 18)
    modulation = {f"modulation.pong.{kind}.{i}": (width,) for kind in ("biases", "gains") for i, width in enumerate(widths)}
    assert list(state) == list(NATURE_STATE) + list(modulation)
    assert {name: tuple(tensor.shape) for name, tensor in state.items()} == {**NATURE_STATE, **modulation}


def test_large_has_the_ewc_papers_layers():
    shapes = [tuple(p.shape) for p in QNetwork("large").shared_parameters().values()][::2]
    assert shapes == [(32, 4, 8, 8), (64, 32, 4, 4), (128, 64, 3, 3), (1024, 128 * 7 * 7), (18, 1024)]


def test_atari_input_is_divided_by_255_bit_for_bit():
    torch.manual_seed(0)
    network = QNetwork()
    frames = torch.arange(256, dtype=torch.uint8).repeat(2 * 4 * 84 * 84 // 256 + 1)[: 2 * 4 * 84 * 84].view(2, 4, 84, 84)
    taps = []
    network(frames, taps=taps)
    assert torch.equal(taps[0][0], frames.float() / 255.0)
    first = network.layers[0]
    assert torch.equal(taps[0][1], F.conv2d(frames.float() / 255.0, first.weight, first.bias, stride=4))


@pytest.mark.parametrize("architecture, channels, hidden", [("minatar", 16, 128), ("minatar-wide", 32, 256)])
def test_minatar_networks(architecture, channels, hidden):
    network = QNetwork(architecture, 6, ["breakout"], input_shape=(10, 10, 10), input_scale=1.0)
    shapes = [tuple(p.shape) for p in network.shared_parameters().values()][::2]
    assert shapes == [(channels, 10, 3, 3), (hidden, channels * 8 * 8), (6, hidden)]  # 10 -> 8 after a 3x3 conv
    frames = torch.randint(0, 2, (5, 10, 10, 10), dtype=torch.uint8)
    taps = []
    q_values = network(frames, "breakout", taps)
    assert q_values.shape == (5, 6) and q_values.dtype == torch.float32
    assert torch.equal(taps[0][0], frames.float())  # MinAtar's 0/1 channels are used as they are
    assert network.num_convs == 1


def test_input_too_small_for_the_convolutions():
    with pytest.raises(ValueError, match="too small"):
        QNetwork("nature", 6, input_shape=(10, 10, 10))
    with pytest.raises(ValueError, match="unknown architecture"):
        QNetwork("tiny")
