import copy

import pytest
import torch

from agents.config import AgentConfig
from agents.dqn import DQNLearner, double_dqn_targets, epsilon_at, epsilon_greedy
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


def huber(x: float) -> float:
    """Huber loss with delta 1: x^2 / 2 inside [-1, 1], |x| - 1/2 outside."""
    return 0.5 * x * x if abs(x) <= 1 else abs(x) - 0.5


def test_the_learners_td_loss_lets_the_online_network_choose_and_the_target_value():
    """td_loss = mean_i Huber(Q(s_i, a_i) - y_i), y_i = r_i + gamma d_i Q_target(s'_i, argmax_a Q_online(s'_i, a)),
    worked out sample by sample. Online and target networks differ so that their argmax over s'
    differ: a learner whose target network also chose the action (plain DQN) gets another loss."""
    torch.manual_seed(0)
    gamma = 0.9
    network = QNetwork("minatar", 6, input_shape=(10, 10, 10), input_scale=1.0)
    learner = DQNLearner(network, AgentConfig(gamma=gamma), Consolidation())
    with torch.no_grad():
        for param in learner.target.parameters():
            param.add_(torch.randn_like(param))
    g = torch.Generator().manual_seed(1)
    n = 16
    batch = Transitions(
        torch.randint(0, 2, (n, 10, 10, 10), dtype=torch.uint8, generator=g),
        torch.randint(0, 6, (n,), generator=g),
        torch.randn(n, generator=g),
        torch.tensor([1.0, 0.0] * (n // 2)),  # every other transition terminated
        torch.randint(0, 2, (n, 10, 10, 10), dtype=torch.uint8, generator=g),
    )
    with torch.no_grad():
        q, q_online_next, q_target_next = network(batch.s_tm1), network(batch.s_t), learner.target(batch.s_t)
    chosen = [int(q_online_next[i].argmax()) for i in range(n)]
    assert sum(c != int(q_target_next[i].argmax()) for i, c in enumerate(chosen)) >= n // 4  # the choices differ
    losses, plain_dqn_losses = [], []
    for i in range(n):
        q_taken = float(q[i, batch.a_tm1[i]])
        bootstrap = gamma * float(batch.discount_t[i])
        losses.append(huber(q_taken - (float(batch.r_t[i]) + bootstrap * float(q_target_next[i, chosen[i]]))))
        plain_dqn_losses.append(huber(q_taken - (float(batch.r_t[i]) + bootstrap * float(q_target_next[i].max()))))
    expected, plain_dqn = sum(losses) / n, sum(plain_dqn_losses) / n
    assert abs(expected - plain_dqn) > 0.01  # the test can tell Double DQN from plain DQN
    loss, q_taken = learner.td_loss(batch, None)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert q_taken.tolist() == pytest.approx([float(q[i, batch.a_tm1[i]]) for i in range(n)], rel=1e-6)


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


def target_is_online(learner: DQNLearner) -> bool:
    return all(torch.equal(a, b) for a, b in zip(learner.target.parameters(), learner.online.parameters()))


def test_the_target_sync_period_restarts_at_every_game():
    """Syncs come every 3 updates counted from the game's start, where `start_game` syncs: 2 updates
    into game 1 do not bring game 2's first periodic sync forward to its 1st update."""
    torch.manual_seed(0)
    learner = DQNLearner(QNetwork(), AgentConfig(learning_rate=1e-3, target_update_every=3), Consolidation())
    batch = random_batch()
    for _ in range(2):
        learner.update(batch, None)
    learner.start_game()
    synced = []
    for _ in range(7):
        learner.update(batch, None)
        synced.append(target_is_online(learner))
    assert synced == [False, False, True, False, False, True, False]
    assert learner.updates == 9


def test_a_resumed_learner_syncs_its_target_at_the_same_updates():
    """The count since the last sync is saved: a learner restored mid-period syncs when the original does.
    A checkpoint saved before the count existed goes on syncing at multiples of all its updates."""
    torch.manual_seed(0)
    config = AgentConfig(learning_rate=1e-3, target_update_every=3)
    learner = DQNLearner(QNetwork(), config, Consolidation())
    batch = random_batch()
    learner.update(batch, None)
    learner.start_game()
    learner.update(batch, None)  # one update since the game's sync, two in all
    state = copy.deepcopy(learner.get_state())
    restored = DQNLearner(QNetwork(), config, Consolidation())
    restored.set_state(state)
    for original_then in ([False, True], [False, False, True]):
        synced = []
        for _ in original_then:
            learner.update(batch, None)
            restored.update(batch, None)
            synced.append(target_is_online(restored))
            assert torch.equal(restored.target.layers[0].weight, learner.target.layers[0].weight)
        assert synced == original_then
    older = {key: value for key, value in state.items() if key != "updates_since_sync"}
    restored.set_state(older)  # 2 updates in all: the next sync is at the 3rd
    assert restored.updates_since_sync == 2


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


def test_gradients_are_clipped_to_max_grad_norm_before_the_step():
    """With the gradient norm G above `max_grad_norm` c, the step is Adam's first step on g * c / G:
    lr * g' / (|g'| + eps) per weight, far smaller here than the unclipped step."""
    lr, eps, c = 1e-3, 1.5e-4, 1e-4
    batch = random_batch(8, seed=3)
    steps = {}
    for clip in (c, 1e9):
        torch.manual_seed(0)
        learner = DQNLearner(
            QNetwork(), AgentConfig(optimizer="adam", learning_rate=lr, adam_eps=eps, max_grad_norm=clip), Consolidation()
        )
        before = [p.detach().clone() for p in learner.online.parameters()]
        reference = copy.deepcopy(learner)  # the raw gradient, computed beside the learner
        reference.td_loss(batch, None)[0].backward()
        gradients = [p.grad for p in reference.online.parameters()]
        learner.update(batch, None)
        steps[clip] = [b - p.detach() for b, p in zip(before, learner.online.parameters())]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients])).item()
    assert norm > 100 * c
    for step, gradient in zip(steps[c], gradients):
        clipped = gradient * (c / norm)
        expected = lr * clipped / (clipped.abs() + eps)
        assert torch.allclose(step, expected, rtol=1e-3, atol=1e-8)  # float32 weights: ulp ~ 4e-9
    for step, gradient in zip(steps[1e9], gradients):
        assert torch.allclose(step, lr * gradient / (gradient.abs() + eps), rtol=1e-3, atol=1e-8)
    largest = [max(step.abs().max().item() for step in steps[clip]) for clip in (c, 1e9)]
    assert largest[0] < 0.5 * lr < 0.9 * lr < largest[1]


def test_act_explores_with_probability_epsilon():
    """Each action is uniformly random with probability epsilon, greedy otherwise: with 6 actions,
    epsilon 0.3 changes 0.3 * 5/6 = 25% of the greedy actions, spread over the other five."""
    torch.manual_seed(0)
    network = QNetwork("minatar", 6, input_shape=(10, 10, 10), input_scale=1.0)
    learner = DQNLearner(network, AgentConfig(), Consolidation())
    frames = torch.randint(0, 2, (6000, 10, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    greedy = network(frames).argmax(1)
    actions = learner.act(frames, None, 0.3, torch.Generator().manual_seed(2))
    changed = actions != greedy
    assert changed.float().mean().item() == pytest.approx(0.25, abs=0.02)
    offsets = (actions[changed] - greedy[changed]) % 6  # which other action: 1..5, each a fifth
    assert torch.bincount(offsets, minlength=6)[0] == 0
    assert all(abs(share - 0.2) < 0.03 for share in (torch.bincount(offsets, minlength=6)[1:] / changed.sum()).tolist())


def test_a_tensor_epsilon_acts_as_the_same_float():
    """A captured graph reads epsilon from a float32 device tensor; for the same generator state it
    gives the float's actions at every epsilon (the comparison u < epsilon is float32 in both)."""
    torch.manual_seed(0)
    network = QNetwork("minatar", 6, input_shape=(10, 10, 10), input_scale=1.0)
    frames = torch.randint(0, 2, (512, 10, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for epsilon in (0.0, 0.01, 0.1, 1 / 3, 0.999, 1.0):
        actions = [
            epsilon_greedy(network, frames, None, value, torch.Generator().manual_seed(5))
            for value in (epsilon, torch.tensor(epsilon))
        ]
        assert torch.equal(actions[0], actions[1]), epsilon
