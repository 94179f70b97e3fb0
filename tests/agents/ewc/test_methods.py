"""The O(P) accumulated quadratic against the explicit per-game sum it stands for."""

import pytest
import torch

from agents.ewc.methods import EWC, L2, Consolidation, OnlineEWC, make_consolidation
from agents.network import QNetwork


def make_network(seed):
    torch.manual_seed(seed)
    return QNetwork(modulated_games=["pong", "breakout"])


def random_fisher(network, seed):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=g) * 10 for name, p in network.shared_parameters().items()}


def explicit_penalty(network, terms, strength):
    """sum_g (lambda/2) sum_i F_g,i (theta_i - theta*_g,i)^2, written out game by game."""
    total = 0.0
    for fisher, anchor in terms:
        for name, param in network.shared_parameters().items():
            total = total + (strength / 2) * (fisher[name] * (param - anchor[name]).square()).sum()
    return total


def train_three_games(method):
    """Consolidate after three 'games' whose end points and Fishers are random."""
    terms = []
    for index, game in enumerate(["pong", "breakout", "space_invaders"]):
        network = make_network(index)
        fisher = random_fisher(network, 10 + index)
        method.end_game(game, network, lambda fisher=fisher: fisher)
        terms.append((fisher, {n: p.detach().clone() for n, p in network.shared_parameters().items()}))
    return terms


def value_and_grads(penalty_fn, network):
    value = penalty_fn(network)
    grads = torch.autograd.grad(value, list(network.shared_parameters().values()))
    return value, grads


def assert_same(network, actual_fn, expected_fn):
    value, grads = value_and_grads(actual_fn, network)
    expected_value, expected_grads = value_and_grads(expected_fn, network)
    assert value.item() == pytest.approx(expected_value.item(), rel=1e-6)
    for grad, expected in zip(grads, expected_grads):
        assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())


def test_ewc_accumulated_penalty_and_gradient_equal_explicit_sum():
    ewc = EWC(strength=50.0)
    terms = train_three_games(ewc)
    network = make_network(99)
    assert_same(network, ewc.penalty, lambda net: explicit_penalty(net, terms, 50.0))
    at_anchor = make_network(2)
    assert ewc.penalty(at_anchor).item() > 0  # only the last game's term vanishes there


def test_revisit_replaces_its_own_term():
    ewc = EWC(strength=3.0)
    terms = train_three_games(ewc)
    revisit = make_network(7)
    new_fisher = random_fisher(revisit, 77)
    ewc.end_game("pong", revisit, lambda: new_fisher)
    new_anchor = {n: p.detach().clone() for n, p in revisit.shared_parameters().items()}
    expected_terms = [(new_fisher, new_anchor), terms[1], terms[2]]
    assert sorted(ewc.per_game) == ["breakout", "pong", "space_invaders"]
    assert_same(make_network(99), ewc.penalty, lambda net: explicit_penalty(net, expected_terms, 3.0))


def test_l2_is_ewc_with_unit_fisher():
    l2 = L2(strength=2.0)
    terms = train_three_games(l2)
    ones = [({n: torch.ones_like(f) for n, f in fisher.items()}, anchor) for fisher, anchor in terms]
    assert_same(make_network(99), l2.penalty, lambda net: explicit_penalty(net, ones, 2.0))


def test_online_ewc_decays_running_fisher_and_anchors_at_latest():
    online = OnlineEWC(strength=5.0, gamma=0.5)
    terms = train_three_games(online)
    (f1, _), (f2, _), (f3, last_anchor) = terms
    running = {n: 0.25 * f1[n] + 0.5 * f2[n] + f3[n] for n in f1}
    assert_same(make_network(99), online.penalty, lambda net: explicit_penalty(net, [(running, last_anchor)], 5.0))


def test_finetune_adds_nothing_and_never_computes_a_fisher():
    finetune = make_consolidation("finetune", 100.0)

    def fail():
        raise AssertionError("finetune must not compute a Fisher")

    assert finetune.end_game("pong", make_network(0), fail) is None
    assert finetune.penalty(make_network(1)).item() == 0.0


def test_per_game_parameters_are_never_penalised():
    ewc = EWC(strength=10.0)
    train_three_games(ewc)
    network = make_network(99)
    per_game = list(network.modulation.parameters())
    grads = torch.autograd.grad(ewc.penalty(network), per_game, allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("name", ["ewc", "online-ewc", "l2"])
def test_state_round_trip_keeps_penalty(name):
    method = make_consolidation(name, 7.0, 0.9)
    train_three_games(method)
    restored = make_consolidation(name, 7.0, 0.9)
    restored.set_state(method.get_state())
    network = make_network(42)
    assert restored.penalty(network).item() == method.penalty(network).item()
    with pytest.raises(ValueError, match="consolidation"):
        Consolidation().set_state(method.get_state())
    # what the folded penalty does not show: the per-game terms (a revisit replaces one) and the
    # running Fisher (online EWC adds to it) must come back too, so the next game ends the same way
    for game in ("breakout", "seaquest"):
        ended = make_network(50)
        fisher = random_fisher(ended, 51)
        method.end_game(game, ended, lambda: fisher)
        restored.end_game(game, ended, lambda: fisher)
        for name in method.precision:
            assert torch.equal(restored.precision[name], method.precision[name]), (game, name)
            assert torch.equal(restored.anchor[name], method.anchor[name]), (game, name)
        assert restored.offset == method.offset
        assert restored.penalty(network).item() == method.penalty(network).item()


def test_online_ewc_is_ewc_until_a_third_game():
    """After one game both hold F_1 and theta*_1; after two, online EWC (gamma 1) keeps F_1 + F_2 anchored
    at theta*_2 while EWC keeps two terms: the MinAtar two-game experiment relies on the first."""
    network = make_network(0)
    ewc, online = make_consolidation("ewc", 30.0), make_consolidation("online-ewc", 30.0)
    first = random_fisher(network, 1)
    for method in (ewc, online):
        method.end_game("a", network, lambda: first)
    moved = make_network(2)
    assert ewc.penalty(moved).item() == online.penalty(moved).item() > 0
    for name in ewc.precision:
        assert torch.equal(ewc.precision[name], online.precision[name]) and torch.equal(ewc.anchor[name], online.anchor[name])
    second = random_fisher(network, 3)
    for method in (ewc, online):
        method.end_game("b", moved, lambda: second)
    assert ewc.penalty(network).item() != pytest.approx(online.penalty(network).item())
