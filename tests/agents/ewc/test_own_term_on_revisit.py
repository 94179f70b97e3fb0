"""`consolidation.own_term_on_revisit`: whether a revisited game's earlier term applies while it trains again.

After pong, breakout and space_invaders end, pong comes back. With the key true (the default) the
penalty while pong trains is the sum of all three terms; with it false, of breakout's and
space_invaders' alone. Either way pong's end replaces its term and all three apply again. Each is
checked against the explicit per-game sum, at the consolidation and through the learner's update.
"""

import copy

import pytest
import torch

from agents.build import build_learner
from agents.config import AgentConfig
from agents.dqn import DQNLearner
from agents.ewc.config import ConsolidationConfig
from agents.ewc.methods import make_consolidation
from envs.families import family_of_run
from ewc_training.config import build_config
from tests.agents.ewc.test_methods import assert_same, explicit_penalty, make_network, random_fisher, train_three_games
from tests.agents.test_dqn import random_batch


def terms_while_pong_trains(terms, own_term_on_revisit: bool):
    """(F_g, theta*_g) in force while pong is revisited: all three, or all but pong's."""
    return terms if own_term_on_revisit else terms[1:]


@pytest.mark.parametrize("method", ["ewc", "l2"])
@pytest.mark.parametrize("own_term_on_revisit", [True, False])
def test_the_penalty_while_a_game_is_revisited(method, own_term_on_revisit):
    consolidation = make_consolidation(method, 5.0, own_term_on_revisit=own_term_on_revisit)
    terms = train_three_games(consolidation)
    if method == "l2":
        terms = [({n: torch.ones_like(f) for n, f in fisher.items()}, anchor) for fisher, anchor in terms]
    network = make_network(99)
    consolidation.train_on("pong")
    in_force = terms_while_pong_trains(terms, own_term_on_revisit)
    assert_same(network, consolidation.penalty, lambda net: explicit_penalty(net, in_force, 5.0))
    consolidation.train_on("seaquest")  # a game never consolidated leaves every term in force
    assert_same(network, consolidation.penalty, lambda net: explicit_penalty(net, terms, 5.0))
    consolidation.train_on("pong")
    revisited = make_network(7)
    new_fisher = random_fisher(revisited, 77) if method == "ewc" else terms[0][0]
    consolidation.end_game("pong", revisited, lambda: new_fisher)
    new_anchor = {n: p.detach().clone() for n, p in revisited.shared_parameters().items()}
    after = [(new_fisher, new_anchor), *terms[1:]]  # pong's term replaced; all three in force between games
    assert_same(network, consolidation.penalty, lambda net: explicit_penalty(net, after, 5.0))


def test_a_games_only_term_left_out_leaves_no_penalty():
    consolidation = make_consolidation("ewc", 5.0, own_term_on_revisit=False)
    network = make_network(0)
    consolidation.end_game("pong", network, lambda: random_fisher(network, 1))
    consolidation.train_on("pong")
    assert consolidation.penalty(make_network(3)).item() == 0.0
    consolidation.train_on("breakout")
    assert consolidation.penalty(make_network(3)).item() > 0


@pytest.mark.parametrize("own_term_on_revisit", [True, False])
def test_the_learner_tells_its_consolidation_which_game_it_updates(own_term_on_revisit):
    """The consolidation term of an update on pong, at the weights before it, is the explicit sum of the terms in force."""
    torch.manual_seed(0)
    consolidation = make_consolidation("ewc", 1e3, own_term_on_revisit=own_term_on_revisit)
    learner = DQNLearner(make_network(99), AgentConfig(), consolidation)
    terms = train_three_games(consolidation)
    before = copy.deepcopy(learner.online)
    stats = learner.update(random_batch(), "pong")
    expected = explicit_penalty(before, terms_while_pong_trains(terms, own_term_on_revisit), 1e3)
    assert stats.consolidation.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_checkpoint_during_a_revisit_restores_the_terms_in_force():
    consolidation = make_consolidation("ewc", 5.0, own_term_on_revisit=False)
    terms = train_three_games(consolidation)
    consolidation.train_on("pong")
    restored = make_consolidation("ewc", 5.0, own_term_on_revisit=False)
    restored.set_state(copy.deepcopy(consolidation.get_state()))
    network = make_network(99)
    assert_same(network, restored.penalty, lambda net: explicit_penalty(net, terms[1:], 5.0))
    restored.train_on("pong")  # the resumed run's first update: nothing changes
    assert restored.penalty(network).item() == consolidation.penalty(network).item()


def test_the_key_reaches_the_learner_and_online_ewc_cannot_leave_a_term_out():
    for value in (True, False):
        config = build_config(None, [f"consolidation.own_term_on_revisit={str(value).lower()}", "run.games=[pong, breakout]"])
        learner = build_learner(config, config.run.games, family_of_run(config.run.games), torch.device("cpu"), 0)
        assert learner.consolidation.own_term_on_revisit is value
    assert ConsolidationConfig().own_term_on_revisit is True
    assert ConsolidationConfig(method="online-ewc").problems() == []
    (problem,) = ConsolidationConfig(method="online-ewc", own_term_on_revisit=False).problems()
    assert "own_term_on_revisit" in problem
    assert ConsolidationConfig(method="l2", own_term_on_revisit=False).problems() == []
