"""The environment section of a run's config: how the emulators are built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EnvConfig:
    """The emulators: Atari (ale-py's C++ vector environment with its built-in preprocessing) or MinAtar."""

    num_envs: int = 8
    """Parallel emulators. The replay ratio (one update per `agent.steps_per_update` steps) holds
    whatever this is: with 8 envs one vector step is 8 agent steps and 2 updates."""
    sticky_action_prob: float = 0.0
    """Repeat-action probability. 0.0 is the EWC paper's (and Nature DQN's) protocol; 0.25 is the
    stochastic protocol recommended by Machado et al. (JAIR 2018)."""
    max_episode_frames: int = 108_000
    """Episodes are cut (truncated, not terminated) after this many emulator frames (Atari: 30 minutes
    of play at 60 frames/s, 27,000 agent steps). MinAtar has no frame skip: there it caps agent steps."""
    noop_max: int = 30
    """Up to this many no-op actions at the start of each episode (Atari only)."""
    difficulty_ramping: bool = True
    """MinAtar only: games speed up as the agent scores (MinAtar's own default, and its paper's)."""

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when nothing is)."""
        checks = [
            (self.num_envs > 0, "env.num_envs must be positive"),
            (self.max_episode_frames >= 100, "env.max_episode_frames must be at least 100 (25 agent steps)"),
        ]
        return [message for ok, message in checks if not ok]
