"""`auto`'s check of a captured update against the eager one (agents/cuda_graph.py `check_against_eager`),
run here on the CPU with two eager steps: the same step (agrees), and one with a slightly larger
learning rate (a wrong step of a given share). Also: `update(replay)` is `update(replay.sample(B))`."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from agents.config import AgentConfig
from agents.cuda_graph import TrainingSnapshot, check_against_eager
from agents.dqn import DQNLearner
from agents.ewc.methods import make_consolidation
from agents.network import QNetwork
from agents.replay import FrameReplay

SHAPE = (10, 10, 10)  # MinAtar-sized: small and fast


def make_learner(optimizer: str = "adam") -> DQNLearner:
    torch.manual_seed(0)
    network = QNetwork("minatar", 6, ["a", "b"], input_shape=SHAPE, input_scale=1.0)
    config = AgentConfig(optimizer=optimizer, batch_size=16, target_update_every=3, learning_rate=1e-3)
    return DQNLearner(network, config, make_consolidation("ewc", 50.0))


def filled_replay(seed: int = 0) -> FrameReplay:
    """A MinAtar-shaped replay of random 0/1 frames with random episode ends."""
    generator = torch.Generator().manual_seed(seed)
    replay = FrameReplay(2 * 40, 2, seed=seed, frame_shape=SHAPE, history=1)
    replay.add_first(torch.randint(0, 2, (2, *SHAPE), dtype=torch.uint8, generator=generator))
    for _ in range(60):
        ends = torch.rand(2, generator=generator) < 0.1
        replay.add(
            torch.randint(6, (2,), generator=generator),
            torch.randn(2, generator=generator),
            ends,
            torch.zeros(2, dtype=torch.bool),
            torch.randint(0, 2, (2, *SHAPE), dtype=torch.uint8, generator=generator),
        )
    return replay


@contextlib.contextmanager
def learning_rate_times(optimizer: torch.optim.Optimizer, factor: float):
    """The optimizer's learning rate scaled by `factor` for the duration: a step off by a known share."""
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] *= factor
    try:
        yield
    finally:
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = rate


def state_of(learner: DQNLearner, replay: FrameReplay) -> list[torch.Tensor]:
    """Weights, optimizer tensors and the replay's generator, to check a state was put back exactly."""
    optimizer = [value.clone() for state in learner.optimizer.state.values() for value in state.values()]
    return [p.detach().clone() for p in learner.online.parameters()] + optimizer + [replay.generator.get_state()]


def check(learner: DQNLearner, replay: FrameReplay, factor: float):
    """The eager step against the same step with its learning rate times `factor`, both sampling `replay`."""

    def eager():
        learner.sampled_step("a", replay)

    def candidate():
        with learning_rate_times(learner.optimizer, factor):
            learner.sampled_step("a", replay)

    return check_against_eager(eager, candidate, learner.online, learner.optimizer, [replay.generator])


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_the_same_step_agrees_and_the_state_is_put_back(optimizer):
    """Agreement needs each mode to start from the same state and draw the same batches: the check
    undoes the eager steps (weights, optimizer moments, the replay's generator) before the candidate's,
    and the candidate's after."""
    learner, replay = make_learner(optimizer), filled_replay()
    learner.update(replay, "a")  # optimizer state exists, and is changed by the check's steps
    before = state_of(learner, replay)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check(learner, replay, 1.0)
    assert result.agree and result.difference == 0 and result.ratio == result.state_ratio == 0 and result.step > 0
    after = state_of(learner, replay)
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_step_half_as_long_again_is_refused_with_one_warning(optimizer):
    """A step 50% longer is 10 times STEP_TOLERANCE: refused, with one one-line warning, state put back.

    The weights then differ by more than half a step per update: Adam's first steps are about
    lr sign(g), here 1.5 lr sign(g)."""
    learner, replay = make_learner(optimizer), filled_replay()
    before = state_of(learner, replay)  # no optimizer state yet: the check's steps create it
    with pytest.warns(RuntimeWarning, match="updates run eagerly from here on") as caught:
        result = check(learner, replay, 1.5)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert not result.agree and result.ratio > 1
    assert result.difference > 0.5 * 0.5 * result.step
    after = state_of(learner, replay)
    assert all(torch.equal(a, b) for a, b in zip(after[: len(before) - 1], before[:-1]))  # weights
    assert torch.equal(after[-1], before[-1])  # generator
    assert all(float(value.abs().max()) == 0 for state in learner.optimizer.state.values() for value in state.values())


def wrong_candidates(learner: DQNLearner, replay: FrameReplay) -> dict:
    """Captured steps that are wrong in the ways a graph can be: each is refused."""
    optimizer, other = learner.optimizer, filled_replay(seed=5)
    frozen = {param: {key: value.clone() for key, value in state.items()} for param, state in optimizer.state.items()}

    def stale_state():  # the step reads the moments as they were at the check's start
        for param, state in optimizer.state.items():
            for key, value in state.items():
                if key != "step" and param in frozen:
                    value.copy_(frozen[param][key])
        learner.sampled_step("a", replay)

    return {
        "missed": lambda: None,
        "doubled": lambda: (learner.sampled_step("a", replay), learner.sampled_step("a", replay)),
        "another batch": lambda: learner.sampled_step("a", other),
        "another game's parameters": lambda: learner.sampled_step("b", replay),
        "stale optimizer state": stale_state,
    }


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
@pytest.mark.parametrize("wrong", ["missed", "doubled", "another batch", "another game's parameters", "stale optimizer state"])
def test_a_wrong_step_is_refused(optimizer, wrong):
    """After some training (optimizer state well under way), each wrong kind of step is refused: by the
    weights, or, for stale optimizer state (RMSProp's steps barely show it), by the optimizer's state."""
    learner, replay = make_learner(optimizer), filled_replay()
    for _ in range(30):
        learner.update(replay, "a")
    candidate = wrong_candidates(learner, replay)[wrong]
    with pytest.warns(RuntimeWarning, match="updates run eagerly from here on"):
        result = check_against_eager(
            lambda: learner.sampled_step("a", replay), candidate, learner.online, learner.optimizer, [replay.generator]
        )
    assert not result.agree and max(result.ratio, result.state_ratio) > 2


def test_a_step_off_by_rounding_agrees():
    """A learning rate off by 1e-6 (a relative step error like float32 rounding's) stays well inside the
    bound: the gains (near 1) then differ by one float32 ulp, 2^-23, within the bound's rounding term."""
    learner, replay = make_learner(), filled_replay()
    learner.update(replay, "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check(learner, replay, 1 + 1e-6)
    assert result.agree and 0 < result.ratio < 0.1


def test_snapshot_puts_generators_back():
    learner, replay = make_learner(), filled_replay()
    snapshot = TrainingSnapshot(learner.online, learner.optimizer, [replay.generator])
    first = replay.sample_indices(8)
    snapshot.restore()
    assert all(torch.equal(a, b) for a, b in zip(replay.sample_indices(8), first))


def test_an_update_from_the_replay_is_an_update_on_its_sample():
    """Eager, `update(replay)` draws `batch_size` transitions and steps on them: the same weights and the
    same generator state as sampling first."""
    (by_replay, by_batch), (replay_a, replay_b) = (make_learner(), make_learner()), (filled_replay(), filled_replay())
    for _ in range(4):
        stats = by_replay.update(replay_a, "a"), by_batch.update(replay_b.sample(16), "a")
        assert torch.equal(stats[0].td_loss, stats[1].td_loss)
    assert all(torch.equal(a, b) for a, b in zip(by_replay.online.parameters(), by_batch.online.parameters()))
    assert torch.equal(replay_a.generator.get_state(), replay_b.generator.get_state())
