"""The CUDA-graph update gives the eager update's results; what can be checked without a GPU is.

On a CPU: the warm-up before capture leaves no trace, update modes resolve and reject correctly,
and a checkpoint from either mode loads into the other. With CUDA (`pytest -m cuda`, run by
scripts/gpu_check.sh): graph and eager learners stay equal over updates, target syncs, a game
change with per-game parameters, and a new EWC penalty.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from agents.config import AgentConfig
from agents.cuda_graph import TrainingSnapshot
from agents.dqn import DQNLearner, resolve_update_mode
from agents.ewc.methods import make_consolidation
from agents.network import QNetwork
from agents.replay import Transitions

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_learner(device: str, mode: str, optimizer: str = "adam", games: list[str] = (), method: str = "ewc") -> DQNLearner:
    torch.manual_seed(0)
    config = AgentConfig(optimizer=optimizer, target_update_every=3, update_mode=mode)
    return DQNLearner(QNetwork("nature", 18, list(games)).to(device), config, make_consolidation(method, 50.0))


def random_batches(count: int, device: str, size: int = 32, seed: int = 1) -> list[Transitions]:
    generator = torch.Generator().manual_seed(seed)

    def frames():
        return torch.randint(0, 256, (size, 4, 84, 84), dtype=torch.uint8, generator=generator)

    batches = [
        Transitions(
            frames(),
            torch.randint(18, (size,), generator=generator),
            torch.randn(size, generator=generator),
            (torch.rand(size, generator=generator) > 0.1).float(),
            frames(),
        )
        for _ in range(count)
    ]
    return [Transitions(*(tensor.to(device) for tensor in batch)) for batch in batches]


def assert_same_learners(a: DQNLearner, b: DQNLearner, atol: float) -> None:
    for (name, pa), pb in zip(a.online.state_dict().items(), b.online.state_dict().values()):
        torch.testing.assert_close(pa, pb.to(pa.device), rtol=0, atol=atol, msg=f"online {name}")
    for (name, pa), pb in zip(a.target.state_dict().items(), b.target.state_dict().values()):
        torch.testing.assert_close(pa, pb.to(pa.device), rtol=0, atol=atol, msg=f"target {name}")


# --- CPU ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_snapshot_restore_undoes_warmup_steps_exactly(optimizer):
    """Warm-up steps before a capture, then restore: later updates equal a learner that never warmed up."""
    warmed, fresh = make_learner("cpu", "eager", optimizer), make_learner("cpu", "eager", optimizer)
    warmup, batches = random_batches(3, "cpu", seed=1), random_batches(2, "cpu", seed=2)
    for learner in (warmed, fresh):  # both have optimizer state before the snapshot...
        learner.update(batches[0], "pong")
    snapshot = TrainingSnapshot(warmed.online, warmed.optimizer)
    for batch in warmup:  # ...and the warm-up changes weights and moments
        warmed.gradient_step("pong", *batch)
    snapshot.restore()
    for batch in batches:
        stats = [learner.update(batch, "pong") for learner in (warmed, fresh)]
    assert_same_learners(warmed, fresh, atol=0)
    assert torch.equal(stats[0].td_loss, stats[1].td_loss)


def test_snapshot_restore_zeroes_state_created_by_the_warmup():
    """Optimizer state that did not exist at the snapshot is zeroed: Adam's own initial state."""
    warmed, fresh = make_learner("cpu", "eager"), make_learner("cpu", "eager")
    snapshot = TrainingSnapshot(warmed.online, warmed.optimizer)
    for batch in random_batches(2, "cpu", seed=3):
        warmed.gradient_step("pong", *batch)
    snapshot.restore()
    assert all(float(value.abs().sum()) == 0 for state in warmed.optimizer.state.values() for value in state.values())
    for batch in random_batches(2, "cpu", seed=4):
        for learner in (warmed, fresh):
            learner.update(batch, "pong")
    assert_same_learners(warmed, fresh, atol=0)


def test_update_modes_resolve_per_device():
    assert resolve_update_mode("auto", torch.device("cuda")) == "cuda-graph"
    assert resolve_update_mode("eager", torch.device("cuda")) == "eager"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_update_mode("cuda-graph", torch.device("cpu"))
    with pytest.raises(ValueError, match="agent.update_mode"):
        resolve_update_mode("jit", torch.device("cpu"))


def test_checkpoint_from_a_cuda_graph_run_resumes_on_cpu():
    """A CUDA-graph run saves `capturable` (not fused) Adam groups; on a CPU the learner runs fused Adam."""
    saved = make_learner("cpu", "eager")
    assert saved.optimizer.param_groups[0]["fused"] and not saved.optimizer.param_groups[0]["capturable"]
    batch = random_batches(1, "cpu")[0]
    saved.update(batch, "pong")
    state = copy.deepcopy(saved.get_state())  # as torch.load would give it: no tensor shared with `saved`
    for group in state["optimizer"]["param_groups"]:
        group["capturable"], group["fused"] = True, None
    loaded = make_learner("cpu", "eager")
    loaded.set_state(state)
    assert all(group["fused"] and not group["capturable"] for group in loaded.optimizer.param_groups)
    loaded.update(batch, "pong")  # a capturable group would fail here on CPU tensors
    saved.update(batch, "pong")
    assert_same_learners(loaded, saved, atol=0)


# --- CUDA ---------------------------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
@pytest.mark.usefixtures("deterministic_cuda")
def test_cuda_graph_update_matches_eager(optimizer):
    """Seven updates (two target syncs) with the EWC penalty on: same weights, targets and stats."""
    learners = [make_learner("cuda", mode, optimizer) for mode in ("eager", "cuda-graph")]
    for learner in learners:
        learner.consolidation.end_game(
            "earlier",
            learner.online,
            lambda: {name: torch.full_like(p, 0.5) for name, p in learner.online.shared_parameters().items()},
        )
    for batch in random_batches(7, "cuda"):
        eager, graphed = (learner.update(batch, "pong") for learner in learners)
        for field in dataclasses.fields(eager):
            torch.testing.assert_close(getattr(graphed, field.name), getattr(eager, field.name), rtol=1e-5, atol=1e-6)
    assert learners[1]._graph is not None
    assert_same_learners(learners[1], learners[0], atol=1e-5)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_cuda_graph_recaptures_for_a_new_game_and_penalty():
    """Game 1, its Fisher and anchor, then game 2 with its own per-game parameters: still eager's results."""
    learners = [make_learner("cuda", mode, games=["pong", "breakout"]) for mode in ("eager", "cuda-graph")]
    batches = random_batches(8, "cuda")
    for learner in learners:
        learner.start_game()
        for batch in batches[:4]:
            learner.update(batch, "pong")
        learner.consolidation.end_game(
            "pong",
            learner.online,
            lambda: {name: p.detach().abs() + 0.1 for name, p in learner.online.shared_parameters().items()},
        )
        learner.start_game()
        for batch in batches[4:]:
            learner.update(batch, "breakout")
    assert_same_learners(learners[1], learners[0], atol=1e-5)
    for game in ("pong", "breakout"):
        for pa, pb in zip(learners[0].online.modulation[game].parameters(), learners[1].online.modulation[game].parameters()):
            torch.testing.assert_close(pb, pa, rtol=0, atol=1e-5)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_cuda_graph_checkpoint_round_trips_between_modes():
    """A CUDA-graph learner's state resumes in eager mode on the GPU and on the CPU, and back from both."""
    graphed = make_learner("cuda", "cuda-graph")
    batches = random_batches(3, "cuda")
    graphed.update(batches[0], "pong")
    state = copy.deepcopy(graphed.get_state())  # as torch.load would give it: no tensor shared
    eager = make_learner("cuda", "eager")
    eager.set_state(state)
    on_cpu = make_learner("cpu", "eager")
    on_cpu.set_state(state)
    regraphed = make_learner("cuda", "cuda-graph")
    regraphed.set_state(copy.deepcopy(eager.get_state()))
    from_cpu = make_learner("cuda", "cuda-graph")
    from_cpu.set_state(copy.deepcopy(on_cpu.get_state()))  # fused Adam state, step counters on the host
    for batch in batches[1:]:
        for learner in (graphed, eager, regraphed, from_cpu):
            learner.update(batch, "pong")
        on_cpu.update(Transitions(*(tensor.cpu() for tensor in batch)), "pong")
    assert_same_learners(eager, graphed, atol=1e-5)
    assert_same_learners(regraphed, graphed, atol=1e-5)
    assert_same_learners(from_cpu, graphed, atol=1e-5)
    assert_same_learners(on_cpu, graphed, atol=1e-4)
