"""Vector MinAtar environments with the interface and episode semantics of ale-py's `AtariVectorEnv`.

MinAtar (Young & Tian 2019) plays 10x10 miniatures of five Atari games; each state is a stack of
binary 10x10 channels (one per kind of object), and every game shares the same six actions
(no-op, left, up, right, down, fire). `MinAtarVectorEnv` holds N `minatar.Environment`s and
behaves as envs/atari.py's vector env does for the rest of the code:

- `reset(seed)` seeds emulator i with `seed + i` and returns the first observations;
- `send(actions)` then `recv()` (or `step(actions)`) returns
  (observations, rewards, terminated, truncated, info);
- autoreset NEXT_STEP: the step that ends an episode returns its real final observation with
  `terminated` (game over) or `truncated` (time limit) set; the next step ignores that emulator's
  action, resets it and returns the reset observation with reward 0 and both flags False. The
  replay buffer relies on exactly that order.

Observations are uint8 (N, CHANNELS, 10, 10), channels first, values 0/1. Every game is padded with
zero channels to CHANNELS, so one network and one replay layout serve every game: a game's own
channels come first, in minatar's order. MinAtar's games are plain Python and a step is cheap, so
`send` only stores the actions and `recv` steps the emulators one after another: threads would only
take turns on the interpreter lock.

MinAtar is GPL: it is imported here, never copied.
"""

from __future__ import annotations

import numpy as np

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
NUM_ACTIONS = 6
"""MinAtar's full action set; an action means the same in every game, so one Q-head serves all."""
CHANNELS = 10
"""Seaquest's channel count, the most of any game; the others are padded with zeros to it."""
SIDE = 10
MAX_EPISODE_STEPS = 27_000
"""Default time limit. MinAtar has none (except freeway's own 2,500 frames), and a good breakout
agent plays forever; 27,000 agent steps is the budget of an Atari episode (108,000 frames at
frame skip 4). MinAtar has no frame skip, so a step here is one MinAtar frame."""


class MinAtarVectorEnv:
    """N MinAtar emulators of one game, stepped in lockstep with NEXT_STEP autoreset."""

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        sticky_action_prob: float = 0.1,
        difficulty_ramping: bool = True,
        max_episode_steps: int = MAX_EPISODE_STEPS,
    ):
        if game not in GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}; choose one of {', '.join(GAMES)}")
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(f"need num_envs >= 1 and max_episode_steps >= 1, got {num_envs} and {max_episode_steps}")
        self.game = game
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        # Imported here, not at the top: minatar imports seaborn, pandas and scipy (~2.5 s), which Atari runs never need.
        from minatar import Environment

        self.envs = [
            Environment(game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping)
            for _ in range(num_envs)
        ]
        self.game_channels = self.envs[0].n_channels
        self.episode_steps = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._actions: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Start a new episode in every emulator; emulator i is seeded with `seed + i` (unless None)."""
        observations = self._empty_observations()
        for i, env in enumerate(self.envs):
            if seed is not None:
                env.seed(seed + i)
            self._reset_one(i, observations)
        self._needs_reset[:] = False
        self._actions = None
        return observations, self._info()

    def send(self, actions: np.ndarray) -> None:
        """Store one action per emulator; `recv` plays them."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got an array of shape {actions.shape}")
        self._actions = actions.copy()

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Play the sent actions: (observations, rewards, terminated, truncated, info).

        truncated_i = not terminated_i and episode_steps_i >= max_episode_steps: an episode that
        ends by game over on its last allowed step is reported terminated (no bootstrap), as ale-py does.
        """
        if self._actions is None:
            raise RuntimeError("recv() needs send() first (and reset() before that)")
        actions, self._actions = self._actions, None
        observations = self._empty_observations()
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:  # the previous step ended this episode: its action is ignored
                self._reset_one(i, observations)
                continue
            rewards[i], terminated[i] = env.act(int(actions[i]))
            self.episode_steps[i] += 1
            self._write_state(i, observations)
        truncated = ~terminated & (self.episode_steps >= self.max_episode_steps)
        self._needs_reset = terminated | truncated
        return observations, rewards, terminated, truncated, self._info()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        self.send(actions)
        return self.recv()

    def close(self) -> None:
        """Nothing to release (no threads, no display); drops the emulators as ale-py's close frees its own."""
        self.envs = []

    def _empty_observations(self) -> np.ndarray:
        """A fresh array per call: on a CPU device torch.from_numpy shares it, so it must never be reused."""
        return np.zeros((self.num_envs, CHANNELS, SIDE, SIDE), dtype=np.uint8)

    def _reset_one(self, i: int, observations: np.ndarray) -> None:
        """New episode in emulator i. Its sticky-action memory goes back to no-op, as the ALE's does,
        so an episode never depends on how the previous one ended (minatar's reset keeps it)."""
        env = self.envs[i]
        env.reset()
        env.last_action = 0
        self.episode_steps[i] = 0
        self._write_state(i, observations)

    def _write_state(self, i: int, observations: np.ndarray) -> None:
        """minatar's bool HWC (10, 10, C) state into channels 0..C-1 of observation i (CHW, uint8)."""
        observations[i, : self.game_channels] = self.envs[i].state().transpose(2, 0, 1)

    def _info(self) -> dict[str, np.ndarray]:
        """The info keys of ale-py that mean something here (no frame skip: a frame is an agent step)."""
        return {"env_id": np.arange(self.num_envs, dtype=np.int32), "episode_frame_number": self.episode_steps.astype(np.int32)}
