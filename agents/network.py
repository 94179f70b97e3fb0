"""Q-networks: the Nature-DQN CNN and the EWC paper's larger one, with optional per-game modulation.

Every layer computes z = Wx + b. With per-game modulation it then computes y = (z + b_g) * g_g,
where b_g (init 0) and g_g (init 1) belong to game g alone (Kirkpatrick et al. 2017, "task-specific
biases and gains"). They are separate Parameters per game, so a game that is not being trained gets
no gradient (grad None) and the optimizer leaves it untouched; they are never consolidated.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES: dict[str, dict[str, tuple[int, ...]]] = {
    # (out channels of the three convolutions, hidden units of the fully connected layer)
    "nature": {"channels": (32, 64, 64), "hidden": (512,)},  # Mnih et al. 2015
    "large": {"channels": (32, 64, 128), "hidden": (1024,)},  # Kirkpatrick et al. 2017, Table S2
}
_KERNELS = ((8, 4), (4, 2), (3, 1))  # (kernel size, stride) of the three convolutions
_CONV_OUTPUT_SIDE = 7  # 84 -> 20 -> 9 -> 7

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


class QNetwork(nn.Module):
    """Maps uint8 frame stacks (N, 4, 84, 84) to Q-values (N, num_actions) for one game."""

    def __init__(
        self,
        architecture: str = "nature",
        num_actions: int = 18,
        modulated_games: list[str] = (),
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose {sorted(ARCHITECTURES)}")
        channels = ARCHITECTURES[architecture]["channels"]
        hidden = ARCHITECTURES[architecture]["hidden"]
        convs = [
            nn.Conv2d(c_in, c_out, kernel, stride)
            for (c_in, c_out), (kernel, stride) in zip(zip((4,) + channels, channels), _KERNELS)
        ]
        flat = channels[-1] * _CONV_OUTPUT_SIDE**2
        widths = (flat,) + hidden + (num_actions,)
        linears = [nn.Linear(w_in, w_out) for w_in, w_out in zip(widths, widths[1:])]
        self.layers = nn.ModuleList(convs + linears)
        self.num_convs = len(convs)
        self.num_actions = num_actions
        layer_widths = list(channels) + list(widths[1:])
        self.modulation = nn.ModuleDict({game: GameModulation(layer_widths) for game in dict.fromkeys(modulated_games)})

    def forward(
        self, frames: torch.Tensor, game: str | None = None, taps: list[LayerTap] | None = None
    ) -> torch.Tensor:
        """Q(s, .) under `game`'s modulation (none for a game without one); `taps` collects (x, z)."""
        modulation = self.modulation[game] if game in self.modulation else None
        x = frames.to(self.layers[0].weight.dtype) / 255.0
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
