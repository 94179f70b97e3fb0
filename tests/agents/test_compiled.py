"""The compiled update gives the eager update's results, to float32 rounding; `auto` leaves it to be
asked for, and asking without a C++ compiler is an error message.

Not bit for bit: inductor sums in its own order. Measured on the MinAtar network over a few updates,
weights differ by at most ~3e-7 and the losses by ~1e-7 (relative); the tolerances below allow ten
times that and still fail on any real difference (one skipped clipping or penalty term, a wrong
target, a stale trace after a game change).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import agents.cuda_graph
from agents.compiled import compiler_available
from agents.config import AgentConfig
from agents.dqn import DQNLearner, resolve_update_mode
from agents.ewc.methods import make_consolidation
from agents.network import QNetwork
from agents.replay import Transitions

needs_compiler = pytest.mark.skipif(not compiler_available(), reason="torch.compile needs a C++ compiler (g++ or $CXX)")

WEIGHT_ATOL = 3e-6
"""Largest difference of any weight after the updates below (measured: ~3e-7)."""
STAT_RTOL = 1e-5
"""Relative difference of the logged TD loss, penalty and mean Q (measured: ~1e-7)."""


def make_learner(mode: str, games: list[str] = ()) -> DQNLearner:
    torch.manual_seed(0)
    config = AgentConfig(target_update_every=3, update_mode=mode)
    network = QNetwork("minatar", 6, list(games), (10, 10, 10), 1.0)
    return DQNLearner(network, config, make_consolidation("ewc", 50.0))


def random_batches(count: int, seed: int) -> list[Transitions]:
    generator = torch.Generator().manual_seed(seed)

    def frames():
        return torch.randint(0, 2, (32, 10, 10, 10), dtype=torch.uint8, generator=generator)

    return [
        Transitions(
            frames(),
            torch.randint(6, (32,), generator=generator),
            torch.randn(32, generator=generator),
            (torch.rand(32, generator=generator) > 0.1).float(),
            frames(),
        )
        for _ in range(count)
    ]


def end_game(learner: DQNLearner, game: str) -> None:
    """A finished game with a Fisher that depends on the weights, so the penalty has a gradient."""
    learner.consolidation.end_game(
        game,
        learner.online,
        lambda: {name: p.detach().abs() + 0.1 for name, p in learner.online.shared_parameters().items()},
    )


def assert_same(eager: DQNLearner, compiled: DQNLearner) -> None:
    for (name, a), b in zip(eager.online.state_dict().items(), compiled.online.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=WEIGHT_ATOL, msg=f"online {name}")
    for (name, a), b in zip(eager.target.state_dict().items(), compiled.target.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=WEIGHT_ATOL, msg=f"target {name}")


def update_both(learners: list[DQNLearner], batches: list[Transitions], game: str) -> None:
    for batch in batches:
        eager, compiled = (learner.update(batch, game) for learner in learners)
        for field in dataclasses.fields(eager):
            torch.testing.assert_close(getattr(compiled, field.name), getattr(eager, field.name), rtol=STAT_RTOL, atol=1e-7)


@pytest.mark.slow  # compiling takes 10 to 40 s on 2 cores
@needs_compiler
def test_compiled_update_matches_eager_with_the_penalty_on():
    """Five updates (a target sync among them) with an EWC penalty: same weights, targets and stats."""
    learners = [make_learner(mode) for mode in ("eager", "compiled")]
    assert learners[1].update_mode == "compiled"
    for learner in learners:
        end_game(learner, "earlier")
    update_both(learners, random_batches(5, seed=1), "minatar:breakout")
    assert_same(*learners)


@pytest.mark.slow
@needs_compiler
def test_compiled_update_follows_a_game_change_and_a_new_penalty():
    """Game 1 without a penalty, its Fisher and anchor, then game 2 with its own biases and gains:
    the compiled learner traces again where it must and still gives eager's results."""
    games = ["minatar:breakout", "minatar:freeway"]
    learners = [make_learner(mode, games) for mode in ("eager", "compiled")]
    batches = random_batches(8, seed=2)
    for learner in learners:
        learner.start_game()
    update_both(learners, batches[:4], games[0])
    for learner in learners:
        end_game(learner, games[0])
        learner.start_game()
    update_both(learners, batches[4:], games[1])
    assert_same(*learners)
    for game in games:
        for a, b in zip(learners[0].online.modulation[game].parameters(), learners[1].online.modulation[game].parameters()):
            torch.testing.assert_close(b, a, rtol=0, atol=WEIGHT_ATOL)


def test_auto_stays_eager_on_a_cpu_and_compiled_needs_a_compiler(monkeypatch):
    """`auto` is eager on a CPU (compiling did not pay there) and the CUDA graph on CUDA, with or
    without a compiler; asking for `compiled` without one is a one-line error, not a failure at the
    first update."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for available in (True, False):
        monkeypatch.setattr(agents.cuda_graph, "compiler_available", lambda: available)
        assert resolve_update_mode("auto", cpu) == "eager"
        assert resolve_update_mode("auto", cuda) == "cuda-graph"
    monkeypatch.setattr(agents.cuda_graph, "compiler_available", lambda: True)
    assert resolve_update_mode("compiled", cpu) == "compiled"
    monkeypatch.setattr(agents.cuda_graph, "compiler_available", lambda: False)
    with pytest.raises(ValueError, match="needs a C.. compiler") as error:
        resolve_update_mode("compiled", cpu)
    assert "\n" not in str(error.value)
