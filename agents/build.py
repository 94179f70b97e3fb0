"""Building the agent from its config sections: one builder for training, evaluation and the benchmark."""

from __future__ import annotations

from typing import Protocol

import torch

from agents.config import AgentConfig, NetworkConfig
from agents.dqn import DQNLearner
from agents.ewc.config import ConsolidationConfig
from agents.ewc.methods import make_consolidation, rehearses
from agents.network import QNetwork
from agents.rehearsal import Rehearsal
from envs.families import Family


class AgentSections(Protocol):
    """The parts of a run's config the agent is built from (a full run Config has them)."""

    network: NetworkConfig
    agent: AgentConfig
    consolidation: ConsolidationConfig


def build_network(network: NetworkConfig, games: list[str], family: Family) -> QNetwork:
    """The Q-network of a run on `games` of `family` (its input and action set), with per-game biases
    and gains for each game when asked for."""
    modulated = games if network.per_game_modulation else []
    return QNetwork(network.architecture, family.num_actions, modulated, family.observation_shape, family.input_scale)


def build_learner(config: AgentSections, games: list[str], family: Family, device: torch.device, seed: int) -> DQNLearner:
    """A fresh learner: network initialised from `seed`, its consolidation method (penalty and
    rehearsal), on `device`."""
    torch.manual_seed(seed)
    network = build_network(config.network, games, family).to(device)
    cons = config.consolidation
    consolidation = make_consolidation(cons.method, cons.ewc_lambda, cons.online_gamma, cons.own_term_on_revisit)
    # its own stream: seeded apart from the acting generator (seed), which would give the same numbers shifted
    rehearsal = Rehearsal(cons.replay_per_game, cons.replay_share, device, seed + 2**32) if rehearses(cons.method) else None
    return DQNLearner(network, config.agent, consolidation, rehearsal)
