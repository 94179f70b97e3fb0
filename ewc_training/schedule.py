"""When things happen in a run: emulator seeds, the update schedule, and periodic events.

The learner makes one update per `agent.steps_per_update` agent steps of a game once
`agent.learning_starts` steps of it have passed:

    due(s) = max(0, (s - learning_starts) // steps_per_update) - updates_skipped

where s counts the steps of the vector step the emulators are taking now (acting overlaps learning).
After a resume without a saved replay, `updates_skipped` = step_in_game // steps_per_update -
updates_in_game at the resume, so learning waits `learning_starts` steps for the refilled replay.
"""

from __future__ import annotations

from agents.config import AgentConfig
from ewc_training.schema import Position

SEED_LIMIT = 2**31 - 2**16
"""ale-py takes int32 seeds and gives emulator i of N the seed `seed + i`: stay below 2^31 with room."""


def env_seed(seed: int, game_index: int, step_in_game: int = 0) -> int:
    """Distinct, reproducible emulator seeds for every game of a run (N envs get seed..seed+N-1).

    Emulator states are not saved, so a game resumed at a later step restarts its episodes from a
    seed of that step: resuming the same checkpoint twice plays the same episodes.
    """
    return (seed * 1_000_003 + game_index * 10_007 + step_in_game) % SEED_LIMIT


def replay_capacity(agent: AgentConfig, steps_per_game: int, num_envs: int) -> int:
    """Transitions one game's replay holds: the configured capacity, or the whole game if shorter."""
    return min(agent.replay_capacity, steps_per_game + num_envs * 8)


def updates_owed(position: Position, agent: AgentConfig, num_envs: int) -> int:
    """Updates due by the end of the vector step in flight and not yet made (formula above)."""
    in_flight = position.step_in_game + num_envs
    due = max(0, (in_flight - agent.learning_starts) // agent.steps_per_update) - position.updates_skipped
    return due - position.updates_in_game


def skip_updates_until_refilled(position: Position, agent: AgentConfig) -> None:
    """After a resume without the replay: the updates up to now are never made (see above)."""
    position.updates_skipped = position.step_in_game // agent.steps_per_update - position.updates_in_game


def crossed(total_steps: int, every: int, num_envs: int) -> bool:
    """Whether the last vector step (`num_envs` agent steps) crossed a multiple of `every` steps."""
    if every <= 0:
        return False
    return total_steps // every > (total_steps - num_envs) // every
