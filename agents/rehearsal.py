"""Rehearsal: transitions kept from every finished game and mixed into each later batch (the replay baseline).

Continual-RL work compares consolidation against replaying old experience: in CORA (Powers et al.
2022) CLEAR (Rolnick et al. 2019), which rehearses a reservoir of all past experience in half of
every batch, forgot least on Atari. DQN learns off-policy already, so the baseline is plain:

    at the end of game g:   M_g <- K transitions drawn uniformly from g's replay (a revisit replaces them)
    every update on game t: B_new = B - round(s B) transitions from t's replay,
                            round(s B) from the memories M_g of the other finished games, split evenly,
    loss = (1/B) sum over the whole batch of Huber(Q(s, a) - y), each transition under its own
           game's per-game biases and gains (the same Double DQN target y as agents/dqn.py)

with K = `consolidation.replay_per_game` and s = `consolidation.replay_share`. With no other game
finished yet, the whole batch comes from the current replay, as in plain fine-tuning. The split is
fixed per game, so the batch's shapes never change and a CUDA graph can capture it. Combined with a
penalty (`ewc+replay`), the penalty is added as usual. CLEAR's behavioural-cloning terms are not
part of it.

A memory is drawn from the replay at the game's end, not a reservoir over the whole game: the
replay already holds the game's most recent `replay_capacity` transitions, and the draw is uniform
over those. A transition keeps o_{t-1} and the newest frame of o_t only: o_t shares every other
frame with o_{t-1} (a sampled transition never crosses an episode's end), which saves the frames
of a second stack (Atari: 5 frames of 7,056 bytes, not 8).
"""

from __future__ import annotations

import torch

from agents.replay import FrameReplay, Transitions

_DRAW_CHUNK = 4_096
"""Transitions drawn from a replay per call while a memory is filled (bounds the temporary stacks)."""


def memory_bytes(per_game: int, observation_shape: tuple[int, int, int], frame_channels: int) -> int:
    """Bytes one game's memory of `per_game` transitions takes: o_{t-1} and o_t's newest frame (uint8),
    a (uint8), r and discount (float32)."""
    channels, height, width = observation_shape
    return per_game * ((channels + frame_channels) * height * width + 1 + 4 + 4)


class Rehearsal:
    """The memories of finished games, and the split of every batch between them and the current replay."""

    def __init__(self, per_game: int, share: float, device: torch.device, seed: int):
        self.per_game = per_game
        self.share = share
        self.device = torch.device(device)
        self.memories: dict[str, dict[str, torch.Tensor]] = {}  # game -> s_tm1, a_tm1, r_t, discount_t, newest
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def remember(self, game: str, replay: FrameReplay) -> None:
        """Keep `per_game` transitions drawn uniformly, with replacement, from `replay` as `game`'s
        memory, replacing an earlier visit's; no more than the replay holds when it holds fewer. Draws
        from the replay's own generator, a chunk at a time into the memory's own tensors, so the draw
        needs one chunk's stacks beside the memory (on Atari a chunk's o_t-1 and o_t are 230 MB)."""
        count = min(self.per_game, len(replay))
        channels, device = replay.frame_shape[0], self.device
        observation = (replay.history * channels,) + replay.frame_shape[1:]
        memory = {
            "s_tm1": torch.empty((count,) + observation, dtype=torch.uint8, device=device),
            "a_tm1": torch.empty(count, dtype=torch.uint8, device=device),
            "r_t": torch.empty(count, dtype=torch.float32, device=device),
            "discount_t": torch.empty(count, dtype=torch.float32, device=device),
            "newest": torch.empty((count,) + replay.frame_shape, dtype=torch.uint8, device=device),
        }
        for start in range(0, count, _DRAW_CHUNK):
            part = replay.sample(min(_DRAW_CHUNK, count - start))
            if not torch.equal(part.s_t[:, :-channels], part.s_tm1[:, channels:]):
                raise RuntimeError("a drawn transition's o_t does not continue its o_t-1; the memory cannot store it frame-once")
            rows = slice(start, start + len(part.a_tm1))
            memory["s_tm1"][rows], memory["a_tm1"][rows] = part.s_tm1, part.a_tm1
            memory["r_t"][rows], memory["discount_t"][rows] = part.r_t, part.discount_t
            memory["newest"][rows] = part.s_t[:, -channels:]
        self.memories[game] = memory

    def split(self, game: str, batch_size: int) -> list[tuple[str, int]]:
        """(game, transitions) per source of a batch on `game`: the current game first (at least one
        transition, whatever the share), then each other remembered game in the order it was first
        remembered (the remainder of an uneven split to the earliest); empty when there is nothing to rehearse."""
        others = [other for other in self.memories if other != game]
        rehearsed = min(round(self.share * batch_size), batch_size - 1) if others else 0  # the current game keeps one
        if rehearsed == 0:
            return []
        shares = [rehearsed // len(others) + (index < rehearsed % len(others)) for index in range(len(others))]
        return [(game, batch_size - rehearsed)] + [(other, count) for other, count in zip(others, shares) if count > 0]

    def sample(self, game: str, count: int) -> Transitions:
        """`count` transitions drawn uniformly, with replacement, from `game`'s memory (device ops only)."""
        memory = self.memories[game]
        index = torch.randint(memory["s_tm1"].shape[0], (count,), device=self.device, generator=self.generator)
        s_tm1, newest = memory["s_tm1"][index], memory["newest"][index]
        channels = newest.shape[1]
        return Transitions(
            s_tm1=s_tm1,
            a_tm1=memory["a_tm1"][index].long(),
            r_t=memory["r_t"][index],
            discount_t=memory["discount_t"][index],
            s_t=torch.cat((s_tm1[:, channels:], newest), dim=1),
        )

    def get_state(self, game: str) -> dict[str, object]:
        """`game`'s memory, saved once when the game ends (it does not change while later games train)."""
        return {"game": game, "memory": {name: tensor.cpu() for name, tensor in self.memories[game].items()}}

    def set_state(self, state: dict[str, object]) -> None:
        """Restore one game's memory saved by `get_state` (a later visit's replaces an earlier one's)."""
        self.memories[str(state["game"])] = {name: tensor.to(self.device) for name, tensor in state["memory"].items()}
