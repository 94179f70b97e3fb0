"""The game boundary, in one call: Fisher from the finishing game's replay -> consolidation -> probes.

    replay of game g --(diagonal_fisher)--> F_g --(consolidation.end_game)--> (F_g, theta*_g) kept
    replay of game g --(make_probe_set)--> states and greedy actions to measure g's retention later

From then on every update's loss is L_TD + consolidation.penalty(theta) (agents/dqn.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agents.dqn import DQNLearner
from agents.ewc.config import ConsolidationConfig
from agents.ewc.fisher import diagonal_fisher, replay_batches
from agents.ewc.methods import Fisher
from agents.ewc.probes import ProbeSet, make_probe_set
from agents.replay import FrameReplay


@dataclass
class GameEnd:
    """What the boundary produced, for the caller to keep and log."""

    fisher: Fisher | None
    """The diagonal Fisher the method computed (None for methods that need none, finetune and l2,
    and for a game not consolidated yet: see `consolidate_after_steps`)."""
    fisher_seconds: float | None
    """Seconds the Fisher took; None when the method computed none (l2 and finetune)."""
    probe: ProbeSet | None
    """None when `probe_states` is 0."""
    consolidated: bool = True
    """False when the game has not been trained for `consolidate_after_steps` yet: no term was added."""


def consolidate_game(
    learner: DQNLearner, replay: FrameReplay, game: str, config: ConsolidationConfig, trained_steps: int
) -> GameEnd:
    """Consolidate `game`, whose training just ended, from its own `replay`.

    The Fisher is computed only if the method asks for it (`end_game` calls `compute_fisher`), over
    `fisher_samples` states drawn uniformly from this game's replay, with this game's modulation.
    A game trained for fewer than `consolidate_after_steps` agent steps in all (`trained_steps`, every
    visit counted) is not consolidated yet: no term is added for it; its probe set is still kept.
    """
    seconds = None

    def compute_fisher() -> Fisher:
        nonlocal seconds
        started = time.perf_counter()
        batches = replay_batches(replay, config.fisher_samples, config.fisher_batch_size)
        fisher = diagonal_fisher(
            learner.online,
            batches,
            game,
            config.fisher,
            temperature=config.policy_temperature,
            target_network=learner.target,
            gamma=learner.config.gamma,
        )
        seconds = time.perf_counter() - started
        return fisher

    consolidated = trained_steps >= config.consolidate_after_steps
    fisher = learner.consolidation.end_game(game, learner.online, compute_fisher) if consolidated else None
    probe = make_probe_set(learner.online, replay, game, config.probe_states) if config.probe_states > 0 else None
    return GameEnd(fisher, seconds, probe, consolidated)
