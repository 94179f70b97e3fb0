"""The evaluation protocol's settings: used by continual evaluation while training and by evaluate.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    """How a network is scored on a game (the Nature-DQN protocol by default)."""

    eval_every: int = 250_000
    """Agent steps between continual evaluations while training; 0 turns them off."""
    episodes: int = 10
    """Episodes per game (evaluate.py's --episodes defaults to this too)."""
    epsilon: float = 0.05
    max_episode_frames: int = 108_000

    def problems(self) -> list[str]:
        checks = [
            (self.eval_every == 0 or self.episodes > 0, "eval.episodes must be positive when eval.eval_every > 0"),
            (0 <= self.epsilon <= 1, "eval.epsilon must be in [0, 1]"),
        ]
        return [message for ok, message in checks if not ok]
