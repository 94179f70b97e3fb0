"""Episode bookkeeping over a vector env with NEXT_STEP autoreset (see envs/atari.py)."""

from __future__ import annotations

import numpy as np


class EpisodeTracker:
    """Raw game score and length of the episode running in each emulator."""

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.resetting = np.zeros(num_envs, dtype=bool)  # this step returns a reset observation

    def step(self, rewards: np.ndarray, ended: np.ndarray) -> list[tuple[float, int]]:
        live = ~self.resetting
        self.returns[live] += rewards[live]
        self.lengths[live] += 1
        finished = [(float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(ended)]
        self.returns[ended], self.lengths[ended] = 0.0, 0
        self.resetting = ended.copy()
        return finished
