"""A population's batched update is each cell's own update: P = 3 cells (fine-tuning, EWC, L2; two seeds)
with per-game biases and gains, on real MinAtar transitions, a few updates on each side of a boundary
where each cell computes its own Fisher from its own replay.

The bound: one batched update (a grouped convolution, batched matmuls, per-cell norms) sums in another
order than a lone network's separate calls, so each weight may differ by float32 rounding; over the 12
updates here that stays below 1e-6, a thousandth of one Adam step at learning rate 1e-3. A wrong step
(a missing penalty, a coupled clip, another cell's batch) moves weights by ~1e-4 to 1e-3; the gradient
norm is clipped at 0.05 so that clipping binds on every update (at 1.0 these gradients never reach it,
and a clip that coupled the cells would go unseen).
"""

from __future__ import annotations

import pytest
import torch

from agents.config import AgentConfig
from agents.dqn import DQNLearner
from agents.ewc.boundary import consolidate_game
from agents.ewc.config import ConsolidationConfig
from agents.ewc.methods import make_consolidation
from agents.network import QNetwork
from agents.population import PopulationError, PopulationLearner
from agents.rehearsal import Rehearsal
from agents.replay import FrameReplay
from envs.config import EnvConfig
from envs.families import make_env
from tests.agents.closeness import assert_close
from tests.agents.test_replay import fill

GAMES = ["minatar:breakout", "minatar:space_invaders"]
CELLS = [("finetune", 0.0, 0), ("ewc", 100.0, 1), ("l2", 0.01, 0)]
UPDATES_PER_GAME = 6
TOLERANCE = 1e-6


def minatar_replay(game: str, seed: int) -> FrameReplay:
    env = make_env(game, 2, EnvConfig())
    return fill(env, FrameReplay(400, 2, frame_shape=(10, 10, 10), history=1, seed=seed), 6, 150, seed)[0]


def learner(method: str, strength: float, seed: int, agent: AgentConfig) -> DQNLearner:
    torch.manual_seed(seed)
    network = QNetwork("minatar", 6, GAMES, (10, 10, 10), 1.0)
    return DQNLearner(network, agent, make_consolidation(method, strength))


def agent_config(scope: str, optimizer: str) -> AgentConfig:
    return AgentConfig(
        batch_size=32, learning_rate=1e-3, target_update_every=4, grad_clip_scope=scope, optimizer=optimizer, max_grad_norm=0.05
    )


@pytest.mark.parametrize(("scope", "optimizer"), [("total", "adam"), ("td", "rmsprop")])
def test_cells_update_and_act_as_they_do_alone_across_a_boundary(scope, optimizer):
    agent = agent_config(scope, optimizer)
    alone = [learner(method, strength, seed, agent) for method, strength, seed in CELLS]
    cells = [learner(method, strength, seed, agent) for method, strength, seed in CELLS]
    population = PopulationLearner(cells)
    boundary = ConsolidationConfig(fisher_samples=64, fisher_batch_size=32, probe_states=0)
    for game in GAMES:
        lone_replays = [minatar_replay(game, 10 + index) for index in range(len(CELLS))]
        cell_replays = [minatar_replay(game, 10 + index) for index in range(len(CELLS))]
        for one in alone + cells:
            one.start_game()
        for _ in range(UPDATES_PER_GAME):
            lone_stats = [one.update(replay, game) for one, replay in zip(alone, lone_replays)]
            cell_stats = population.update(cell_replays, game)
        for (method, _, seed), one, member, a, b in zip(CELLS, alone, cells, lone_stats, cell_stats):
            where = f"{method} s{seed} on {game}"
            for (name, expected), actual in zip(one.online.named_parameters(), member.online.parameters()):
                assert_close(actual, expected, rtol=0, atol=TOLERANCE, where=f"{where}: {name}")
            for expected, actual in zip(one.target.parameters(), member.target.parameters()):
                assert_close(actual, expected, rtol=0, atol=TOLERANCE, where=f"{where}: target")
            assert_close(b.values, a.values, rtol=1e-4, atol=1e-7, where=f"{where}: td loss, penalty, Q")
        observations = [replay.sample(16).s_tm1 for replay in lone_replays]
        lone_actions = [
            one.act(obs, game, 0.3, torch.Generator().manual_seed(index))
            for index, (one, obs) in enumerate(zip(alone, observations))
        ]
        generators = [torch.Generator().manual_seed(index) for index in range(len(CELLS))]
        assert all(torch.equal(a, b) for a, b in zip(lone_actions, population.act(observations, game, 0.3, generators)))
        for replay in cell_replays:
            replay.sample(16)  # the draws the lone replays made for the observations
        for one, replay in zip(alone, lone_replays):
            consolidate_game(one, replay, game, boundary, trained_steps=10**9)
        for member, replay in zip(cells, cell_replays):
            consolidate_game(member, replay, game, boundary, trained_steps=10**9)
    assert cell_stats[1].consolidation > 0  # EWC's term was in force in game 2


def test_a_cell_reads_and_writes_the_populations_numbers():
    """A cell's parameters are views of its row: its own target sync and Fisher see the batched steps."""
    agent = agent_config("total", "adam")
    cells = [learner(method, strength, seed, agent) for method, strength, seed in CELLS]
    population = PopulationLearner(cells)
    replays = [minatar_replay(GAMES[0], index) for index in range(len(CELLS))]
    before = [cell.online.layers[0].weight.detach().clone() for cell in cells]
    population.update(replays, GAMES[0])
    assert all(not torch.equal(cell.online.layers[0].weight, old) for cell, old in zip(cells, before))
    for index, cell in enumerate(cells):
        assert torch.equal(cell.online.layers[0].weight, population.online["layers.0.weight"][index])
        cell.sync_target()
        assert torch.equal(population.target["layers.0.weight"][index], cell.online.layers[0].weight)
        assert cell.optimizer.state_dict()["state"][0]["exp_avg"].shape == cell.online.layers[0].weight.shape


def test_cells_that_cannot_share_a_computation_are_refused():
    agent = agent_config("total", "adam")
    with pytest.raises(PopulationError, match="same agent settings"):
        PopulationLearner([learner("ewc", 1.0, 0, agent), learner("ewc", 1.0, 1, agent_config("td", "adam"))])
    rehearsing = learner("finetune", 0.0, 0, agent)
    rehearsing.rehearsal = Rehearsal(100, 0.5, torch.device("cpu"), 0)
    with pytest.raises(PopulationError, match="replay"):
        PopulationLearner([learner("ewc", 1.0, 0, agent), rehearsing])
