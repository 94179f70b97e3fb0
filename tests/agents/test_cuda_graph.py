"""The CUDA-graph update gives the eager update's results; what can be checked without a GPU is.

On a CPU: the warm-up before capture leaves no trace, update modes resolve and reject correctly,
and a checkpoint from either mode loads into the other. With CUDA (`pytest -m cuda`, run by
scripts/gpu_check.sh): graph and eager learners stay equal over updates, target syncs, a game
change with per-game parameters, and a new EWC penalty, with batches passed in or drawn by the graph
itself from the replay; both stay as near a float64 learner as each other (float drift, not a wrong
step); `auto` keeps a graph that agrees. Every comparison reports its largest absolute and relative
difference against the size of one update (tests/agents/closeness.py).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import warnings
import weakref

import pytest
import torch

from agents.config import AgentConfig
from agents.cuda_graph import TrainingSnapshot
from agents.dqn import DQNLearner, resolve_update_mode
from agents.ewc.methods import make_consolidation
from agents.network import QNetwork
from agents.replay import FrameReplay, Transitions
from tests.agents.closeness import assert_close, one_update_steps
from tests.agents.test_replay import StackingEnv, fill

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DRIFT_TOLERANCE = 1e-3
"""Share of an update step the graph may drift from float64 beyond eager's drift, per update (see its test)."""


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


def end_pong(learner: DQNLearner) -> None:
    """Pong's game end for `learner`: its anchor, and a Fisher of |theta| + 0.1 (every weight weighed, each differently)."""
    learner.consolidation.end_game(
        "pong",
        learner.online,
        lambda: {name: p.detach().abs() + 0.1 for name, p in learner.online.shared_parameters().items()},
    )


def assert_same_learners(a: DQNLearner, b: DQNLearner, atol: float, steps: dict[str, float] | None = None) -> None:
    """Online and target weights equal within `atol`; a failure reports the difference against `steps`,
    each tensor's largest change in one update (tests/agents/closeness.py)."""
    steps = steps or {}
    for part in ("online", "target"):
        for (name, pa), pb in zip(getattr(a, part).state_dict().items(), getattr(b, part).state_dict().values()):
            assert_close(pa, pb, rtol=0, atol=atol, where=f"{part} {name}", step=steps.get(name))


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


@pytest.mark.parametrize("saved_fused", [True, None])
def test_checkpoint_from_a_cuda_graph_run_resumes_on_cpu(saved_fused):
    """A CUDA run saves `capturable` fused Adam groups (capturable alone before Adam was fused there); on
    a CPU the learner runs fused, not capturable, Adam."""
    saved = make_learner("cpu", "eager")
    assert saved.optimizer.param_groups[0]["fused"] and not saved.optimizer.param_groups[0]["capturable"]
    batch = random_batches(1, "cpu")[0]
    saved.update(batch, "pong")
    state = copy.deepcopy(saved.get_state())  # as torch.load would give it: no tensor shared with `saved`
    for group in state["optimizer"]["param_groups"]:
        group["capturable"], group["fused"] = True, saved_fused
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
        stats = []
        steps = one_update_steps(learners[0].online, lambda: stats.append(learners[0].update(batch, "pong")))
        eager, graphed = stats[0], learners[1].update(batch, "pong")
        for field in dataclasses.fields(eager):
            assert_close(getattr(graphed, field.name), getattr(eager, field.name), rtol=1e-5, atol=1e-6, where=field.name)
    assert learners[1]._graph is not None
    assert_same_learners(learners[1], learners[0], atol=1e-5, steps=steps)


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
        end_pong(learner)
        learner.start_game()
        for batch in batches[4:7]:
            learner.update(batch, "breakout")
    steps = one_update_steps(learners[0].online, lambda: learners[0].update(batches[7], "breakout"))
    learners[1].update(batches[7], "breakout")
    assert_same_learners(learners[1], learners[0], atol=1e-5, steps=steps)  # per-game parameters included


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


def float64_learner(games: list[str]) -> DQNLearner:
    """The learner `make_learner` builds, in float64 on the CPU: the reference both float32 modes drift from."""
    learner = make_learner("cpu", "eager", games=games)
    learner.online.double()
    learner.target.double()
    return learner


def distances(learner: DQNLearner, reference: DQNLearner) -> dict[str, float]:
    """Each online tensor's largest |theta - theta_reference|, in float64."""
    return {
        name: float((tensor.double().cpu() - reference.online.state_dict()[name].double().cpu()).abs().max())
        for name, tensor in learner.online.state_dict().items()
    }


@pytest.mark.cuda
@needs_cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_both_modes_stay_as_near_float64_across_a_game_boundary():
    """Tells float drift from a wrong captured step. Eager and CUDA-graph float32 learners and a float64
    CPU learner run the same 8 updates: 4 on pong, then pong's Fisher and anchor (a new penalty), then
    4 on breakout (its per-game parameters new to the optimizer, a new capture). After every update
    each mode's largest distance from float64 and the update's size are tabled (printed; shown on failure).

    Both float32 modes round the same arithmetic, so their distances from float64 grow alike: float
    drift. A wrong step (at the boundary or anywhere) puts the graph a large share of an update away
    while eager stays near float64. Checked for every tensor, after U updates:
        d_graph <= 2 d_eager + U (DRIFT_TOLERANCE s + 2^-23 max |theta|)
    with s the tensor's largest change in one float64 update. DRIFT_TOLERANCE = 1e-3 of a step per
    update, stricter than the runtime check's STEP_TOLERANCE (which also allows the rarer ReLU flips,
    agents/cuda_graph.py): one float32 update differs from another ordering of the same sums by ~1e-5
    of a step, and at these fixed batches and deterministic kernels this test passed at 1e-3 on an H200.
    """
    games = ["pong", "breakout"]
    eager, graphed = (make_learner("cuda", mode, games=games) for mode in ("eager", "cuda-graph"))
    reference = float64_learner(games)
    learners = (reference, eager, graphed)
    batches = random_batches(8, "cuda")
    rows, steps = [], {}
    for index, batch in enumerate(batches):
        game = "pong" if index < 4 else "breakout"
        if index in (0, 4):
            for learner in learners:
                if index == 4:
                    end_pong(learner)
                learner.start_game()
        cpu_batch = Transitions(*(tensor.cpu() for tensor in batch))
        update_steps = one_update_steps(reference.online, lambda: reference.update(cpu_batch, game))
        steps = {name: max(steps.get(name, 0.0), size) for name, size in update_steps.items()}
        eager.update(batch, game)
        graphed.update(batch, game)
        eager_distance, graph_distance = distances(eager, reference), distances(graphed, reference)
        between = max(distances(graphed, eager).values())
        rows.append(
            f"update {index + 1} ({game}): largest |eager - float64| {max(eager_distance.values()):.3g}, "
            f"|graph - float64| {max(graph_distance.values()):.3g}, |graph - eager| {between:.3g}, "
            f"largest one-update change {max(update_steps.values()):.3g}"
        )
    table = "\n".join(rows)
    print(table)
    failures = []
    for name, theta in reference.online.state_dict().items():
        bound = len(batches) * (DRIFT_TOLERANCE * steps[name] + 2.0**-23 * float(theta.abs().max()))
        if graph_distance[name] > 2 * eager_distance[name] + bound:
            failures.append(
                f"{name}: |graph - float64| {graph_distance[name]:.3g}, |eager - float64| {eager_distance[name]:.3g}, "
                f"one update up to {steps[name]:.3g}"
            )
    assert not failures, "\n".join(failures + ["", table])


def filled_replays(count: int, seed: int) -> list[FrameReplay]:
    """`count` equal Atari-shaped replays on the GPU, random frames and episode ends (same sampler seed)."""
    replays = [FrameReplay(3 * 200, 3, "cuda", seed=seed) for _ in range(count)]
    for replay in replays:
        fill(StackingEnv(3, (1, 84, 84), 4), replay, 18, 150, seed=seed)
    return replays


@pytest.mark.cuda
@needs_cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_a_graph_that_samples_its_own_batches_matches_eager_across_a_game_boundary():
    """`update(replay)`: in cuda-graph mode the graph draws each batch on the device from the replay's
    generator; eager draws the same batches, so both learners stay equal, and the replays' generators
    end in the same state (a resumed run samples on exactly as before). A finished game's replay is
    not kept alive by its graph."""
    games = ["pong", "breakout"]
    eager, graphed = (make_learner("cuda", mode, games=games) for mode in ("eager", "cuda-graph"))
    for game_index, game in enumerate(games):
        eager_replay, graph_replay = filled_replays(2, seed=game_index)
        for learner in (eager, graphed):
            if game_index == 1:
                end_pong(learner)
            learner.start_game()
        for _ in range(4):
            steps = one_update_steps(eager.online, lambda replay=eager_replay: eager.update(replay, game))
            graphed.update(graph_replay, game)
        assert torch.equal(eager_replay.generator.get_state(), graph_replay.generator.get_state())
        assert_same_learners(graphed, eager, atol=1e-5, steps=steps)
        finished = weakref.ref(graph_replay)
        del eager_replay, graph_replay
        gc.collect()
        assert finished() is None  # while its graph is still the learner's


@pytest.mark.cuda
@needs_cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_auto_mode_keeps_a_graph_that_agrees_with_eager():
    """`auto` on CUDA captures, checks the graph against eager from the same state (undoing both), and
    keeps it: no warning, results as an eager learner's."""
    auto, eager = make_learner("cuda", "auto"), make_learner("cuda", "eager")
    replays = filled_replays(2, seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            steps = one_update_steps(eager.online, lambda: eager.update(replays[0], "pong"))
            auto.update(replays[1], "pong")
    assert not [warning for warning in caught if "eagerly from here on" in str(warning.message)]
    assert auto.update_mode == "cuda-graph" and auto._graph is not None
    assert_same_learners(auto, eager, atol=1e-5, steps=steps)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_captured_acting_chooses_the_eager_actions():
    """In cuda-graph mode `act` replays a captured forward pass and epsilon-greedy draw: from the same
    generator state it picks eager acting's actions, at each epsilon, after updates have moved the
    weights (read in place by the graph), and for a new game after `start_game` (recaptured); both
    generators end in the same state."""
    games = ["pong", "breakout"]
    eager, graphed = (make_learner("cuda", mode, games=games) for mode in ("eager", "cuda-graph"))
    generators = [torch.Generator(device="cuda").manual_seed(3) for _ in range(2)]
    frames = random_batches(6, "cuda", size=8, seed=7)
    for game in games:
        for learner in (eager, graphed):
            learner.start_game()
        for batch, epsilon in zip(frames, (1.0, 0.5, 0.1, 0.0, 0.3, 0.05)):
            actions = [
                learner.act(batch.s_tm1, game, epsilon, generator) for learner, generator in zip((eager, graphed), generators)
            ]
            assert torch.equal(actions[0], actions[1]), (game, epsilon)
            for learner in (eager, graphed):
                learner.update(batch, game)
            graphed.online.load_state_dict(eager.online.state_dict())  # the same weights for the next choice
    assert graphed._actor is not None
    assert torch.equal(generators[0].get_state(), generators[1].get_state())
