"""Q-networks: convolutions then fully connected layers, with optional per-game modulation.

The kinds (ARCHITECTURES): the Nature-DQN CNN and the EWC paper's larger one for Atari's 84x84
stacks, and MinAtar's one-convolution network and a wider version of it for 10x10 inputs.

Every layer computes z = Wx + b. With per-game modulation it then computes y = (z + b_g) * g_g,
where b_g (init 0) and g_g (init 1) belong to game g alone (Kirkpatrick et al. 2017, "task-specific
biases and gains"). They are separate Parameters per game, so a game that is not being trained gets
no gradient (grad None) and the optimizer leaves it untouched; they are never consolidated.
"""

from __future__ import annotations

import torch
from torch import nn

_ATARI_KERNELS = ((8, 4), (4, 2), (3, 1))  # 84 -> 20 -> 9 -> 7
ARCHITECTURES: dict[str, dict[str, tuple]] = {
    # out channels of the convolutions, their (kernel size, stride), hidden units of the fully connected layers
    "nature": {"channels": (32, 64, 64), "kernels": _ATARI_KERNELS, "hidden": (512,)},  # Mnih et al. 2015
    "large": {"channels": (32, 64, 128), "kernels": _ATARI_KERNELS, "hidden": (1024,)},  # Kirkpatrick et al. 2017, Table S2
    "minatar": {"channels": (16,), "kernels": ((3, 1),), "hidden": (128,)},  # Young & Tian 2019: 10 -> 8
    # The wider option for MinAtar: twice the channels and hidden units of "minatar", about 4x its weights.
    "minatar-wide": {"channels": (32,), "kernels": ((3, 1),), "hidden": (256,)},
}

ARCHITECTURE_FAMILY = {"nature": "atari", "large": "atari", "minatar": "minatar", "minatar-wide": "minatar"}
"""The game family (envs/families.py) each architecture is made for: the MinAtar network on Atari frames
would train, slowly and badly (one 3x3 convolution over 84x84, a 107,584-wide fully connected input)."""

LayerTap = tuple[torch.Tensor, torch.Tensor]
"""(input x, pre-modulation output z = Wx + b) of one layer; the Fisher is built from these."""


class GameModulation(nn.Module):
    """One game's biases b_g and gains g_g for every layer: y = (z + b_g) * g_g."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(width)) for width in widths])
        self.gains = nn.ParameterList([nn.Parameter(torch.ones(width)) for width in widths])

    def apply(self, index: int, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        shape = (1, -1) + (1,) * (z.dim() - 2)  # broadcast over batch (and conv positions)
        return (z + self.biases[index].view(shape)) * self.gains[index].view(shape)


def conv_output_side(side: int, kernels: tuple[tuple[int, int], ...]) -> int:
    """Side of the last feature map: side -> floor((side - k) / s) + 1 per unpadded convolution."""
    for kernel, stride in kernels:
        side = (side - kernel) // stride + 1
    return side


class QNetwork(nn.Module):
    """Maps uint8 observations (N, C, H, W) to Q-values (N, num_actions) for one game.

    `input_shape` is one observation: (4, 84, 84) for Atari's 4-frame stacks, (10, 10, 10) for
    MinAtar's padded channels. `input_scale` brings the uint8 input to the unit range: 1/255 for
    pixels, 1.0 for MinAtar's 0/1 channels.
    """

    def __init__(
        self,
        architecture: str = "nature",
        num_actions: int = 18,
        modulated_games: list[str] = (),
        input_shape: tuple[int, int, int] = (4, 84, 84),
        input_scale: float = 1 / 255,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose {sorted(ARCHITECTURES)}")
        channels = ARCHITECTURES[architecture]["channels"]
        kernels = ARCHITECTURES[architecture]["kernels"]
        hidden = ARCHITECTURES[architecture]["hidden"]
        in_channels, height, width = input_shape
        out_height, out_width = conv_output_side(height, kernels), conv_output_side(width, kernels)
        if out_height < 1 or out_width < 1:
            raise ValueError(f"input {tuple(input_shape)} is too small for the {architecture!r} convolutions")
        convs = [
            nn.Conv2d(c_in, c_out, kernel, stride)
            for (c_in, c_out), (kernel, stride) in zip(zip((in_channels,) + channels, channels), kernels)
        ]
        flat = channels[-1] * out_height * out_width
        widths = (flat,) + hidden + (num_actions,)
        linears = [nn.Linear(w_in, w_out) for w_in, w_out in zip(widths, widths[1:])]
        self.layers = nn.ModuleList(convs + linears)
        self.num_convs = len(convs)
        self.num_actions = num_actions
        self.input_shape = tuple(input_shape)
        self.input_scale = input_scale
        # Dividing by 1/scale, not multiplying by scale: 1/(1/255) is exactly 255.0, so Atari input
        # is x / 255 bit for bit as before (x * float32(1/255) differs in the last bit for half the
        # pixel values, which would change every result).
        self._input_divisor = 1.0 / input_scale
        layer_widths = list(channels) + list(widths[1:])
        self.modulation = nn.ModuleDict({game: GameModulation(layer_widths) for game in dict.fromkeys(modulated_games)})

    def forward(self, frames: torch.Tensor, game: str | None = None, taps: list[LayerTap] | None = None) -> torch.Tensor:
        """Q(s, .) under `game`'s modulation (none for a game without one); `taps` collects (x, z)."""
        modulation = self.modulation[game] if game in self.modulation else None
        x = frames.to(self.layers[0].weight.dtype) / self._input_divisor  # = frames * input_scale
        for index, layer in enumerate(self.layers):
            if index == self.num_convs:
                x = x.flatten(1)
            z = layer(x)
            if taps is not None:
                taps.append((x, z))
            if modulation is not None:
                z = modulation.apply(index, z)
            x = torch.relu(z) if index < len(self.layers) - 1 else z
        return x

    def shared_parameters(self) -> dict[str, nn.Parameter]:
        """The weights and biases every game shares: the ones consolidation protects."""
        return {f"layers.{name}": param for name, param in self.layers.named_parameters()}
