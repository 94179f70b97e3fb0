"""Frame-once replay: each frame is stored once and observations of several frames are rebuilt when sampling.

An observation is the last `history` frames, each of shape (C, H, W), concatenated along channels:
o_t = (f_{t-L+1}, ..., f_t), shape (L*C, H, W), newest frame in the last C channels. Atari frames
are (1, 84, 84) with L = 4; MinAtar frames are (10, 10, 10) with L = 1 (o_t = f_t). For L > 1, o_t
shares L - 1 frames with o_{t+1}; storing observations would cost L times the memory (28 GB instead
of 7 GB per million Atari transitions), storing both o_t and o_{t+1} 2L times. Each of the N vector
environments writes its own stream of frames (shape N x slots x C x H x W), so an observation never
mixes environments. All tensors live on the training device: under CUDA, sampling and rebuilding
observations never touch host memory.

Episode ends follow the vector env's NEXT_STEP autoreset (see envs/atari.py, envs/minatar.py). Stream
slot t holds f_t, the newest frame of observation o_t, and the transition taken from it: a_t, r_t and
whether o_{t+1} ended the episode (terminated: no bootstrap; truncated by the time limit: bootstrap
from o_{t+1}). The slot of a final observation has no transition (the env ignored that action and
returned the reset observation next), so it is never sampled. Frames older than an episode's first
observation are zeros, exactly as the env itself pads the stack after a reset.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Transitions(NamedTuple):
    """A batch of transitions; names carry the time index to keep off-by-one errors out."""

    s_tm1: torch.Tensor  # uint8 (B, L*C, H, W): (B, 4, 84, 84) on Atari, (B, 10, 10, 10) on MinAtar
    a_tm1: torch.Tensor  # int64 (B,)
    r_t: torch.Tensor  # float32 (B,), clipped reward
    discount_t: torch.Tensor  # float32 (B,), 0 after termination, 1 otherwise (gamma not applied)
    s_t: torch.Tensor  # uint8 (B, L*C, H, W)


def replay_bytes(capacity: int, frame_shape: tuple[int, int, int] = (1, 84, 84)) -> int:
    """Device memory one buffer of `capacity` transitions takes: C*H*W + 8 bytes each (frame, uint8
    action, float32 reward, 3 bool flags); frames dominate (7,056 B on Atari, 1,000 B on MinAtar)."""
    per_transition = int(np.prod(frame_shape)) + 1 + 4 + 3
    return capacity * per_transition


class FrameReplay:
    """Circular frame-once replay of one game, written by N environments in lockstep.

    `frame_shape` (C, H, W) is one frame and `history` (L) the frames per observation; the
    defaults are Atari's 84x84 grayscale 4-frame stacks.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        frame_shape: tuple[int, int, int] = (1, 84, 84),
        history: int = 4,
    ):
        if len(frame_shape) != 3 or history < 1:
            raise ValueError(f"need a (C, H, W) frame shape and history >= 1, got {frame_shape} and {history}")
        if capacity < num_envs * (history + 2):
            raise ValueError(f"replay capacity {capacity} is too small for {num_envs} environments")
        self.num_envs = num_envs
        self.slots = capacity // num_envs  # per environment stream
        self.device = torch.device(device)
        self.frame_shape = tuple(frame_shape)
        self.history = history
        shape = (num_envs, self.slots)
        self.frames = torch.zeros(shape + self.frame_shape, dtype=torch.uint8, device=self.device)
        self.actions = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        self.rewards = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.has_transition = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.episode_start = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.observations_written = 0  # per stream; all streams advance together
        self._previous_ended = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        # Sampling reads frames t-L+1 .. t+1; row 0 of _layers indexes o_t's frames in that window, row 1 o_t+1's.
        self._window = torch.arange(-(history - 1), 2, device=self.device)
        self._layers = torch.arange(history, device=self.device) + torch.arange(2, device=self.device).unsqueeze(1)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        # What sampling draws from, on the device, written in place by every add: a CUDA graph that
        # samples reads these same two tensors at every replay and so always sees the current buffer.
        self.lowest = torch.zeros((), dtype=torch.int64, device=self.device)  # oldest sampleable stream index
        self.span = torch.zeros((), dtype=torch.int64, device=self.device)  # stream indices from there

    @property
    def capacity(self) -> int:
        return self.num_envs * self.slots

    def __len__(self) -> int:
        """Stream positions sampling draws from (the few final observations among them are skipped)."""
        return self.num_envs * max(0, self.observations_written - 1 - self._oldest_sampleable())

    def _oldest_sampleable(self) -> int:
        """Oldest stream index whose L - 1 older frames are still in the buffer (all, before a wrap)."""
        if self.observations_written <= self.slots:
            return 0
        return self.observations_written - self.slots + self.history - 1

    def _publish_bounds(self) -> None:
        """Copy the sampleable range into `lowest` and `span` (in place: no new tensors, no host sync)."""
        lowest = self._oldest_sampleable()
        self.lowest.fill_(lowest)
        self.span.fill_(max(0, self.observations_written - 1 - lowest))

    def add_first(self, observations: torch.Tensor) -> None:
        """Store the reset observations (N, L*C, H, W) that begin every stream."""
        self.frames[:, 0] = self._newest_frames(observations)
        self.episode_start[:, 0] = True
        self.observations_written = 1
        self._publish_bounds()

    def add_restart(self, observations: torch.Tensor) -> None:
        """Begin new episodes in every stream (N, L*C, H, W) after a resume reset the emulators.

        The newest stored observation then never got its transition, as with a final observation.
        """
        self._previous_ended.fill_(True)
        no_step = torch.zeros(self.num_envs, dtype=torch.bool)
        self.add(torch.zeros(self.num_envs, dtype=torch.uint8), torch.zeros(self.num_envs), no_step, no_step, observations)

    def add(
        self,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        next_observations: torch.Tensor,
    ) -> None:
        """Store one vector step: a_t, r_t, episode ends from o_t, and the next observations."""
        if self.observations_written == 0:
            raise RuntimeError("add_first() must store the reset observations before add()")
        t = (self.observations_written - 1) % self.slots
        ended = (terminated | truncated).to(self.device)
        self.actions[:, t] = actions.to(self.device, torch.uint8)
        self.rewards[:, t] = rewards.to(self.device, torch.float32)
        self.terminated[:, t] = terminated.to(self.device)
        self.has_transition[:, t] = ~self._previous_ended  # o_t final -> its action was ignored
        t_next = self.observations_written % self.slots
        self.frames[:, t_next] = self._newest_frames(next_observations)
        self.episode_start[:, t_next] = self._previous_ended
        self.has_transition[:, t_next] = False  # not yet taken
        self._previous_ended = ended
        self.observations_written += 1
        self._publish_bounds()

    def _newest_frames(self, observations: torch.Tensor) -> torch.Tensor:
        """f_t of each observation (N, L*C, H, W): its last C channels."""
        expected = (self.history * self.frame_shape[0],) + self.frame_shape[1:]
        if tuple(observations.shape[1:]) != expected:
            raise ValueError(f"observations of shape {tuple(observations.shape)}; this replay stores (N, {expected})")
        return observations[:, -self.frame_shape[0] :].to(self.device)

    def _stack_pair(self, env: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Observations o_t and o_t+1 (B, L*C, H, W each), rebuilt from frames t-L+1..t+1 of each stream.

        In an observation whose newest frame is e, frame j is kept only when no episode starts in
        (j, e]; otherwise it is zero. Counting episode starts along the (L+1)-frame window once
        decides every frame of both observations, and one indexing op reads all their frames: about
        ten ops per batch instead of seventy for Atari's L = 4, which matters on a GPU, where each
        launch costs more than its work. With L = 1 every frame is kept: o_t = f_t, o_t+1 = f_t+1.
        """
        batch = t.shape[0]
        window = (t.unsqueeze(1) + self._window) % self.slots  # (B, L+1): positions t-L+1 .. t+1
        starts_so_far = self.episode_start[env.unsqueeze(1), window].cumsum(dim=1)  # (B, L+1)
        keep = starts_so_far[:, self._layers] == starts_so_far[:, self._layers[:, -1:]]  # (B, 2, L)
        stacks = self.frames[env.view(1, -1, 1), window[:, self._layers].transpose(0, 1)]  # (2, B, L, C, H, W)
        stacks.mul_(keep.transpose(0, 1)[..., None, None, None])
        stacks = stacks.view(2, batch, self.history * self.frame_shape[0], *self.frame_shape[1:])
        return stacks[0], stacks[1]

    def sample_indices(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform (env, t) pairs over sampleable transitions: device ops only, capturable in a CUDA graph.

        No host synchronisation and nothing read from the host: the range comes from the device
        tensors `lowest` and `span`, so a captured graph replayed later samples the buffer as it is
        then. 2B positions are drawn uniformly over the N * span stream positions in range,
            p = r mod (N * span),  r uniform on [0, 2^62)  (bias below N * span / 2^62 < 1e-12),
            env = p div span,  t = lowest + p mod span,
        and the first B valid ones are kept: with c_i the number of valid draws among draws 0..i,
        the k-th pick (k = 1..B) is the first i with c_i >= k, found by one `searchsorted` on c.

        Why this is uniform over valid transitions: the draws are independent and uniform, so given
        which of them are valid, the valid ones are independent and uniform over the valid
        positions; keeping the first B by draw order (not by value) keeps that. Only final
        observations are invalid (one per episode, and the newest one before a resume); with an
        invalid share q < 1/10 (episodes longer than 10 steps) fewer than B of 2B = 64 draws are
        valid with probability below 1e-16 (q = 1/20: 1e-25). Then the missing picks repeat the
        valid draws in order (each still uniform over valid transitions, no longer independent of
        the others), and if no draw at all is valid (q^(2B)) the last draw is returned as it is.
        """
        if len(self) == 0:
            raise RuntimeError("the replay holds no complete transition yet")
        draws = 2 * batch_size
        r = torch.randint(2**62, (draws,), device=self.device, generator=self.generator)
        position = r % (self.num_envs * self.span)
        env, t = position // self.span, self.lowest + position % self.span
        valid_so_far = self.has_transition[env, t % self.slots].cumsum(0)  # c_i
        found = valid_so_far[-1:].clamp_min(1)
        wanted = torch.arange(batch_size, device=self.device) % found + 1  # 1..B, cycling when fewer were valid
        pick = torch.searchsorted(valid_so_far, wanted).clamp_(max=draws - 1)
        return env[pick], t[pick]

    def gather(self, env: torch.Tensor, t: torch.Tensor) -> Transitions:
        """The transitions that start at stream positions (env, t)."""
        slot = t % self.slots
        s_tm1, s_t = self._stack_pair(env, t)
        return Transitions(
            s_tm1=s_tm1,
            a_tm1=self.actions[env, slot].long(),
            r_t=self.rewards[env, slot],
            discount_t=(~self.terminated[env, slot]).float(),
            s_t=s_t,
        )

    def sample(self, batch_size: int) -> Transitions:
        return self.gather(*self.sample_indices(batch_size))

    def get_state(self) -> dict[str, object]:
        """Everything needed to restore this buffer exactly (large: frames included)."""
        names = ("frames", "actions", "rewards", "terminated", "has_transition", "episode_start")
        state: dict[str, object] = {name: getattr(self, name).cpu() for name in names}
        state.update(
            observations_written=self.observations_written,
            previous_ended=self._previous_ended.cpu(),
            generator=self.generator.get_state(),
        )
        return state

    def set_state(self, state: dict[str, object]) -> None:
        """Restore `get_state`'s dict; also a single-channel state saved before frames had a channel
        axis (frames (N, slots, H, W), as every replay saved before MinAtar did)."""
        frames = state["frames"]
        if self.frame_shape[0] == 1 and tuple(frames.shape) == self.frames.shape[:2] + self.frame_shape[1:]:
            frames = frames.unsqueeze(2)
        self.frames.copy_(frames)
        for name in ("actions", "rewards", "terminated", "has_transition", "episode_start"):
            getattr(self, name).copy_(state[name])
        self.observations_written = int(state["observations_written"])
        self._previous_ended.copy_(state["previous_ended"])
        self.generator.set_state(state["generator"])
        self._publish_bounds()
