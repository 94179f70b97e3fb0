"""Epsilon when a game comes back, in a real run of breakout, space invaders, breakout (MinAtar).

`agent.epsilon_clock: visit` counts the steps of the current visit: the revisit explores from
`epsilon_start` again, exactly as the first visit did. `game` counts every step the game has been
trained: the revisit goes on from where the first visit left off. The run is observed, never
changed: the learner's own `act` is wrapped to record the epsilon the loop hands it.
"""

from __future__ import annotations

import pytest
import torch

from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer

GAMES = ["minatar:breakout", "minatar:space_invaders", "minatar:breakout"]
STEPS = 400
NUM_ENVS = 4
VECTOR_STEPS = STEPS // NUM_ENVS


def epsilons_of_each_visit(clock: str, run_dir) -> list[list[float]]:
    """The epsilon of every vector step, one list per game of the sequence (no learning: only acting matters)."""
    config = build_config(
        "configs/smoke.yaml",
        [
            f"run.games=[{', '.join(GAMES)}]",
            "network.architecture=minatar",
            f"run.steps_per_game={STEPS}",
            f"env.num_envs={NUM_ENVS}",
            f"agent.learning_starts={10 * STEPS}",  # no update: acting is what is watched
            "agent.epsilon_start=1.0",
            "agent.epsilon_end=0.01",
            "agent.epsilon_decay_fraction=0.5",  # 1 -> 0.01 over the first 200 steps of the schedule
            f"agent.epsilon_clock={clock}",
            "consolidation.method=finetune",
            "consolidation.probe_states=0",
            "run.checkpoint_every=0",
            "run.log_every=100000",
            "run.device=cpu",
        ],
    )
    trainer = SequenceTrainer(config, run_dir, torch.device("cpu"), MemoryLogger())
    epsilons: list[float] = []
    act = trainer.learner.act

    def recording_act(observations, game, epsilon, generator):
        epsilons.append(epsilon)
        return act(observations, game, epsilon, generator)

    trainer.learner.act = recording_act
    trainer.run()
    assert len(epsilons) == len(GAMES) * VECTOR_STEPS
    return [epsilons[k * VECTOR_STEPS : (k + 1) * VECTOR_STEPS] for k in range(len(GAMES))]


def schedule(step: int) -> float:
    """epsilon = 1 - 0.99 * min(1, step / 200): linear from 1 to 0.01 over 200 steps, then flat."""
    return 1.0 - 0.99 * min(1.0, step / 200)


def test_a_revisit_explores_from_epsilon_start_again_on_the_visit_clock(tmp_path):
    first, second, revisit = epsilons_of_each_visit("visit", tmp_path / "run")
    expected = [schedule(NUM_ENVS * k) for k in range(VECTOR_STEPS)]
    assert first[0] == revisit[0] == 1.0
    assert first[-1] == pytest.approx(0.01)  # the first visit had finished exploring
    for visit in (first, second, revisit):
        assert visit == pytest.approx(expected)


def test_a_revisit_goes_on_from_where_it_left_off_on_the_game_clock(tmp_path):
    first, second, revisit = epsilons_of_each_visit("game", tmp_path / "run")
    fresh = [schedule(NUM_ENVS * k) for k in range(VECTOR_STEPS)]
    assert first == pytest.approx(fresh) and second == pytest.approx(fresh)  # a new game starts its own clock
    assert revisit == pytest.approx([schedule(STEPS + NUM_ENVS * k) for k in range(VECTOR_STEPS)])
    assert max(revisit) == pytest.approx(0.01)
