"""Seeded training orders drawn the EWC paper's way: `--sequence random:SEGMENTS` (train.py, sweep.py).

Kirkpatrick et al. (2017) trained on games "presented in random order, for long segments, with
returns to earlier games". `random:N` draws N segments over the given games, uniformly among the
orders that

    visit every game at least once and never put the same game in two segments in a row

(two segments of one game in a row would be one longer segment). The draw is exact, with no
rejection: with n games, let C(r, u) be the number of ways to continue for r more segments when u
games are still unvisited and the current one is not among them:

    C(0, u) = 1 if u = 0 else 0
    C(r, u) = (n - 1 - u) C(r - 1, u) + u C(r - 1, u - 1)     (a revisit, or a first visit)

Each next game is picked with probability proportional to the completions it leaves. The draw
depends on the games and the seed alone: every method of a seed trains the same order, and the same
command draws it again.
"""

from __future__ import annotations

import random

SEQUENCE_KINDS = ("random",)
"""The `--sequence` rules: `random:N`."""
MAX_SEGMENTS = 10_000
"""A bound on N: more segments than any run could train is a typo."""


def parse_sequence_rule(text: str) -> int:
    """The segment count of `random:N`; a ValueError in one line for anything else."""
    kind, _, count = text.partition(":")
    if kind not in SEQUENCE_KINDS or not (count.isascii() and count.isdigit()) or not 1 <= int(count) <= MAX_SEGMENTS:
        raise ValueError(f"--sequence must look like random:SEGMENTS with 1 <= SEGMENTS <= {MAX_SEGMENTS:,}, got {text!r}")
    return int(count)


def completion_counts(games: int, segments: int) -> list[list[int]]:
    """C[r][u] of the module docstring for r = 0 .. segments and u = 0 .. games (exact integers)."""
    counts = [[1] + [0] * games]
    for _ in range(segments):
        last = counts[-1]
        counts.append([(games - 1 - u) * last[u] + (u * last[u - 1] if u else 0) for u in range(games + 1)])
    return counts


def draw_sequence(games: list[str], segments: int, seed: int) -> list[str]:
    """`segments` games drawn from `games` (repeats ignored), each at least once, none twice in a row."""
    distinct = list(dict.fromkeys(games))
    if segments < len(distinct):
        raise ValueError(f"--sequence random:{segments} cannot visit all {len(distinct)} games; give at least {len(distinct)}")
    if len(distinct) == 1 and segments > 1:
        raise ValueError(f"--sequence random:{segments} needs at least two games to return to one")
    rng = random.Random(seed)
    counts = completion_counts(len(distinct), segments)
    walk = [rng.choice(distinct)]  # every first game leaves the same number of completions
    while len(walk) < segments:
        left = segments - len(walk) - 1  # segments after the one being drawn
        unvisited = [game for game in distinct if game not in walk]
        revisits = [game for game in distinct if game in walk and game != walk[-1]]
        per_revisit = counts[left][len(unvisited)]
        per_first_visit = counts[left][len(unvisited) - 1] if unvisited else 0
        pick = rng.randrange(len(revisits) * per_revisit + len(unvisited) * per_first_visit)
        if pick < len(revisits) * per_revisit:
            walk.append(revisits[pick // per_revisit])
        else:
            walk.append(unvisited[(pick - len(revisits) * per_revisit) // per_first_visit])
    return walk
