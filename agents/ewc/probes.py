"""Retention probes: how much of an earlier game's behaviour survives, measured in seconds.

At the end of game g a fixed set of its replay states is kept with the network's greedy actions
and Q-values there. Later, the share of those states whose greedy action is unchanged, and the
mean |Q_now - Q_then|, show forgetting at any scale, long before (and much cheaper than) scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.network import QNetwork
from agents.replay import FrameReplay


@dataclass
class ProbeSet:
    states: torch.Tensor  # uint8 (M, 4, 84, 84)
    greedy_actions: torch.Tensor  # int64 (M,)
    q_values: torch.Tensor  # float32 (M, A)

    def get_state(self) -> dict[str, torch.Tensor]:
        return {"states": self.states, "greedy_actions": self.greedy_actions, "q_values": self.q_values}


@torch.no_grad()
def _q_values(network: QNetwork, states: torch.Tensor, game: str, chunk: int = 256) -> torch.Tensor:
    return torch.cat([network(states[i : i + chunk], game) for i in range(0, len(states), chunk)])


def make_probe_set(network: QNetwork, replay: FrameReplay, game: str, size: int) -> ProbeSet:
    """Sample `size` states of `game`'s replay and record what the network does there now."""
    states = replay.sample(size).s_tm1
    q_values = _q_values(network, states, game)
    return ProbeSet(states, q_values.argmax(dim=1), q_values)


def retention(network: QNetwork, probe: ProbeSet, game: str) -> dict[str, float]:
    """greedy_agreement = mean 1[argmax Q_now = argmax Q_then]; mean_abs_dq = mean |Q_now - Q_then|."""
    q_now = _q_values(network, probe.states, game)
    return {
        "greedy_agreement": (q_now.argmax(dim=1) == probe.greedy_actions).float().mean().item(),
        "mean_abs_dq": (q_now - probe.q_values).abs().mean().item(),
    }
