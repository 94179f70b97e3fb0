"""Seeded training orders drawn the EWC paper's way: `--sequence random:SEGMENTS` (train.py, sweep.py).

Kirkpatrick et al. (2017) trained on games "presented in random order, for long segments, with
returns to earlier games". `random:N` draws N segments over the given games:

    a random walk over the games that never stays on one game from a segment to the next,
    drawn again until it has visited every game at least once.

Two segments of the same game in a row would be one longer segment, so none are drawn. The draw
depends on the games and the seed alone: every method of a seed trains the same order, and the
same command draws it again.
"""

from __future__ import annotations

import random

SEQUENCE_KINDS = ("random",)
"""The `--sequence` rules: `random:N`."""
MAX_DRAWS = 100_000
"""Walks tried before giving up (only N a little above the number of games, with many games, comes close)."""


def parse_sequence_rule(text: str) -> int:
    """The segment count of `random:N`; a ValueError in one line for anything else."""
    kind, _, count = text.partition(":")
    if kind not in SEQUENCE_KINDS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"--sequence must look like random:SEGMENTS (e.g. random:10), got {text!r}")
    return int(count)


def draw_sequence(games: list[str], segments: int, seed: int) -> list[str]:
    """`segments` games drawn from `games` (repeats ignored), each at least once, none twice in a row."""
    distinct = list(dict.fromkeys(games))
    if segments < len(distinct):
        raise ValueError(f"--sequence random:{segments} cannot visit all {len(distinct)} games; give at least {len(distinct)}")
    if len(distinct) == 1 and segments > 1:
        raise ValueError(f"--sequence random:{segments} needs at least two games to return to one")
    rng = random.Random(seed)
    if segments == len(distinct):  # every valid walk is a permutation, all equally likely: draw one directly
        return rng.sample(distinct, len(distinct))
    for _ in range(MAX_DRAWS):
        walk = [rng.choice(distinct)]
        while len(walk) < segments:
            walk.append(rng.choice([game for game in distinct if game != walk[-1]]))
        if set(walk) == set(distinct):
            return walk
    raise ValueError(f"--sequence random:{segments}: no order visiting all {len(distinct)} games found; use more segments")
