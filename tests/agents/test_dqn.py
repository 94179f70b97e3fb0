import pytest
import torch

from agents.config import AgentConfig
from agents.dqn import DQNLearner, double_dqn_targets, epsilon_at
from agents.ewc.methods import Consolidation
from agents.network import QNetwork
from agents.replay import Transitions


def test_double_dqn_target_hand_computed():
    # online picks argmax over s': sample 0 -> action 1, sample 1 -> action 0
    q_online_next = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, -1.0]])
    q_target_next = torch.tensor([[10.0, 4.0, 30.0], [7.0, 100.0, 2.0]])
    rewards = torch.tensor([1.0, -1.0])
    discounts = torch.tensor([1.0, 0.0])  # sample 1 terminated: no bootstrap
    targets = double_dqn_targets(q_online_next, q_target_next, rewards, discounts, gamma=0.9)
    # sample 0: 1 + 0.9 * Q_target(s', 1) = 1 + 0.9 * 4 = 4.6 (not max_a Q_target = 30)
    assert targets.tolist() == pytest.approx([4.6, -1.0])


def test_epsilon_restarts_each_game_and_follows_its_schedule():
    config = AgentConfig(epsilon_start=1.0, epsilon_end=0.01, epsilon_decay_fraction=0.1)
    assert epsilon_at(0, config, 1000) == 1.0
    assert epsilon_at(50, config, 1000) == pytest.approx(0.505)
    assert epsilon_at(100, config, 1000) == pytest.approx(0.01)
    assert epsilon_at(999, config, 1000) == pytest.approx(0.01)
    paper = AgentConfig(epsilon_decay_start=50_000, epsilon_decay_steps=1_000_000)
    assert epsilon_at(50_000, paper, 10_000_000) == 1.0
    assert epsilon_at(550_000, paper, 10_000_000) == pytest.approx(0.505)
    assert epsilon_at(1_050_000, paper, 10_000_000) == pytest.approx(0.01)


def random_batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g)
    return Transitions(
        frames, torch.randint(0, 18, (n,), generator=g), torch.randn(n, generator=g), torch.ones(n), frames.roll(1, 0)
    )


def test_update_lowers_td_loss_and_syncs_target_when_due():
    torch.manual_seed(0)
    learner = DQNLearner(QNetwork(), AgentConfig(learning_rate=1e-3, target_update_every=3), Consolidation())
    batch = random_batch()
    before = learner.td_loss(batch, None)[0].item()
    for _ in range(2):
        learner.update(batch, None)
    assert not torch.equal(learner.online.layers[0].weight, learner.target.layers[0].weight)
    assert learner.td_loss(batch, None)[0].item() < before  # same target, lower loss
    learner.update(batch, None)
    assert torch.equal(learner.online.layers[0].weight, learner.target.layers[0].weight)


def test_per_game_parameters_of_other_games_stay_untouched():
    torch.manual_seed(0)
    learner = DQNLearner(QNetwork(modulated_games=["pong", "breakout"]), AgentConfig(), Consolidation())
    pong_before = [p.clone() for p in learner.online.modulation["pong"].parameters()]
    for seed in range(3):
        learner.update(random_batch(seed=seed), "breakout")
    assert all(torch.equal(a, b) for a, b in zip(pong_before, learner.online.modulation["pong"].parameters()))
    assert not all(torch.equal(p, torch.ones_like(p)) for p in learner.online.modulation["breakout"].gains)


def test_act_is_greedy_at_zero_epsilon_and_random_at_one():
    torch.manual_seed(0)
    learner = DQNLearner(QNetwork(), AgentConfig(), Consolidation())
    frames = random_batch(64).s_tm1
    greedy = learner.online(frames).argmax(1)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(learner.act(frames, None, 0.0, generator), greedy)
    assert (learner.act(frames, None, 1.0, generator) != greedy).float().mean() > 0.5
