"""Continual-learning metrics of an evaluation matrix, in human-normalised score (HNS).

Notation, for a sequence of T games g_1 .. g_T (a game may come back: pong, breakout, pong):

    R[k][g]   mean HNS on game g of the network saved after the first k games (k = 1 .. T)
    t_g       the position at which g is first trained (t_pong = 1 above)
    K         the last position evaluated (T unless fewer checkpoints were picked)

HNS = (score - random) / (human - random) (envs/games.py): 0 plays like random, 1 like a human.
A game without reference scores has HNS NaN and is left out of every mean below.

- mean HNS after game k:  A_k = mean over the sequence's games g (each once) of R[k][g].
- final mean HNS:         A_K.
- total clipped HNS after game k: S_k = sum over the sequence's games g (each once) of min(R[k][g], 1):
                          the y axis of Kirkpatrick et al. 2017, Fig. 4 ("total human-normalised score,
                          each game's score clipped at 1"); its maximum is the number of games
                          (with reference scores: the others are left out, as from every mean).
- forgetting of game g:   F_g = max_{t_g <= l < K} R[l][g] - R[K][g], for games with t_g < K:
                          the best it was at an earlier checkpoint since it was first learned, minus
                          where it ended (Chaudhry et al., "Riemannian Walk for Incremental Learning",
                          ECCV 2018, eq. 8). Negative when the game ended better than it ever was before.
- clipped forgetting:     F+_g = max_{t_g <= k <= K} R[k][g] - R[K][g] = max(F_g, 0): the same with the
                          final checkpoint in the max, never negative (this suite's forgetting before).
- forgetting between visits of game g, with p_1 < p_2 < ... the positions at which g is trained
  and p_(m+1) = K + 1 after its last visit:
                          B_g = max over visits j of ( R[p_j][g] - min_{p_j <= l < p_(j+1)} R[l][g] ),
                          for games with t_g < K: the largest loss from right after a visit to the
                          lowest score before the game's next visit (or the end). Never negative. F_g
                          compares with the final row only, so a loss repaired by a revisit is not in
                          it: pong, breakout, pong with pong 1.0, 0.0, 1.0 has F_pong = 0 and B_pong = 1.
- mean forgetting:        mean of F_g over those games (and mean clipped forgetting, of F+_g; mean
                          forgetting between visits, of B_g).
- backward transfer:      BWT = mean over positions i < K of (R[K][g_i] - R[i][g_i]): how training
                          the later games changed each game from right after it was trained
                          (Lopez-Paz & Ranzato, "Gradient Episodic Memory", NeurIPS 2017).
                          Negative is forgetting; positive means later games helped.
- learned when trained:   L_g = R[t_g][g], how well game g plays right after its first training.
- forward transfer:       FT_g = L_g - R*_g for games first trained after others (t_g > 1), where R*_g
                          is the normalised score of the same agent trained on g alone with the same
                          budget: how much the earlier games helped (> 0) or hindered (< 0) learning
                          g. Progress & Compress (Schwarz et al. 2018) report L_g / R*_g (EWC's 49-57%
                          on Atari); on MinAtar the normalisation's 1 is R*_g at the references' budget
                          (envs/games.py), so there FT_g = L_g - 1. mean forward transfer: the mean of FT_g.

Positions whose checkpoint was not evaluated are skipped in every max and mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

HnsMatrix = Mapping[int, Mapping[str, float]]
"""R[k][game]: mean HNS on `game` after the first k games of the sequence (k is 1-based)."""


def mean_hns(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN (games with reference scores); NaN if there are none."""
    kept = [value for value in values if not math.isnan(value)]
    return sum(kept) / len(kept) if kept else math.nan


def mean_hns_after_each_game(hns: HnsMatrix, sequence: Sequence[str]) -> dict[int, float]:
    """A_k = mean over the sequence's games of R[k][g], for every evaluated position k."""
    games = list(dict.fromkeys(sequence))
    return {k: mean_hns(row[g] for g in games if g in row) for k, row in sorted(hns.items())}


def total_clipped_hns(values: Iterable[float]) -> float:
    """Sum of min(value, 1) over the values that are not NaN; NaN if there are none."""
    kept = [min(value, 1.0) for value in values if not math.isnan(value)]
    return float(sum(kept)) if kept else math.nan


def total_clipped_hns_after_each_game(hns: HnsMatrix, sequence: Sequence[str]) -> dict[int, float]:
    """S_k = sum over the sequence's games of min(R[k][g], 1), NaN games left out, for every position k."""
    games = list(dict.fromkeys(sequence))
    return {k: total_clipped_hns(row[g] for g in games if g in row) for k, row in sorted(hns.items())}


def forgetting(hns: HnsMatrix, sequence: Sequence[str]) -> dict[str, float]:
    """F_g = max_{t_g <= l < K} R[l][g] - R[K][g] for every game first trained before K (signed)."""
    return _best_since_learned_minus_final(hns, sequence, include_final=False)


def clipped_forgetting(hns: HnsMatrix, sequence: Sequence[str]) -> dict[str, float]:
    """F+_g = max_{t_g <= k <= K} R[k][g] - R[K][g] = max(F_g, 0) for every game first trained before K."""
    return _best_since_learned_minus_final(hns, sequence, include_final=True)


def _best_since_learned_minus_final(hns: HnsMatrix, sequence: Sequence[str], include_final: bool) -> dict[str, float]:
    """max over evaluated rows k in [t_g, K) (or [t_g, K]) of R[k][g], minus R[K][g].

    A game whose only evaluated row since t_g is K itself (the rows between were not evaluated)
    has no earlier checkpoint to compare with: it is left out of the signed forgetting.
    """
    final = max(hns)
    result: dict[str, float] = {}
    for game in dict.fromkeys(sequence):
        first_trained = sequence.index(game) + 1
        if first_trained >= final or game not in hns[final]:
            continue
        last_row = final if include_final else final - 1
        since_learned = [row[game] for k, row in hns.items() if first_trained <= k <= last_row and game in row]
        if since_learned:
            result[game] = max(since_learned) - hns[final][game]
    return result


def between_visit_forgetting(hns: HnsMatrix, sequence: Sequence[str]) -> dict[str, float]:
    """B_g = max over visits j of R[p_j][g] - min_{p_j <= l < p_(j+1)} R[l][g] (module docstring).

    Each visit is compared with the rows after it up to the game's next visit, the one revisit-aware
    measure here: a game forgotten and then relearned shows its loss. Only visits before the last
    row K count (a game first trained at K has no later row, and is left out as from the signed
    forgetting); a visit followed at once by the next one (`p, p`) loses nothing, 0. A visit whose
    row was not evaluated, or whose later rows before the next visit were not, adds nothing.
    """
    final = max(hns)
    result: dict[str, float] = {}
    for game in dict.fromkeys(sequence):
        visits = [position for position, trained in enumerate(sequence[:final], start=1) if trained == game]
        drops = []
        for visit, next_visit in zip(visits, visits[1:] + [final + 1]):
            if visit >= final or game not in hns.get(visit, {}):
                continue
            between = range(visit + 1, next_visit)
            after = [hns[k][game] for k in between if game in hns.get(k, {})]
            if after or not between:  # rows that exist but were not evaluated say nothing
                drops.append(hns[visit][game] - min([hns[visit][game], *after]))
        if drops:
            result[game] = max(drops)
    return result


def backward_transfer(hns: HnsMatrix, sequence: Sequence[str]) -> float:
    """BWT = mean over positions i < K of R[K][g_i] - R[i][g_i]; NaN if no such position."""
    final = max(hns)
    changes = [
        hns[final][game] - hns[position][game]
        for position, game in enumerate(sequence[: final - 1], start=1)
        if position in hns and game in hns[position] and game in hns[final]
    ]
    return mean_hns(changes)


def learned_when_trained(hns: HnsMatrix, sequence: Sequence[str]) -> dict[str, float]:
    """L_g = R[t_g][g] for every game whose first position t_g was evaluated."""
    first = {game: sequence.index(game) + 1 for game in dict.fromkeys(sequence)}
    return {game: hns[t][game] for game, t in first.items() if t in hns and game in hns[t]}


def forward_transfer(hns: HnsMatrix, sequence: Sequence[str], single_game: Mapping[str, float]) -> dict[str, float]:
    """FT_g = L_g - R*_g for games first trained after the first position that have a reference R*_g."""
    learned = learned_when_trained(hns, sequence)
    return {game: learned[game] - single_game[game] for game in learned if game != sequence[0] and game in single_game}


def summarise(hns: HnsMatrix, sequence: Sequence[str], single_game: Mapping[str, float] | None = None) -> dict[str, object]:
    """Every metric above, for the report (`final_after_game` is K); forward transfer only with
    `single_game`, each game's normalised score trained alone at the same budget (R*_g)."""
    if not hns:
        return {}
    after_each = mean_hns_after_each_game(hns, sequence)
    total_clipped = total_clipped_hns_after_each_game(hns, sequence)
    per_game_forgetting = forgetting(hns, sequence)
    per_game_clipped = clipped_forgetting(hns, sequence)
    per_game_between_visits = between_visit_forgetting(hns, sequence)
    final = max(hns)
    return {
        "final_after_game": final,
        "final_mean_hns": after_each[final],
        "final_total_clipped_hns": total_clipped[final],
        "mean_forgetting": mean_hns(per_game_forgetting.values()),
        "mean_clipped_forgetting": mean_hns(per_game_clipped.values()),
        "mean_between_visit_forgetting": mean_hns(per_game_between_visits.values()),
        "backward_transfer": backward_transfer(hns, sequence),
        "forgetting": per_game_forgetting,
        "clipped_forgetting": per_game_clipped,
        "between_visit_forgetting": per_game_between_visits,
        "mean_hns_after_game": after_each,
        "total_clipped_hns_after_game": total_clipped,
        "learned_when_trained": learned_when_trained(hns, sequence),
        **({} if single_game is None else _forward_transfer_entries(forward_transfer(hns, sequence, single_game))),
    }


def _forward_transfer_entries(per_game: dict[str, float]) -> dict[str, object]:
    return {"mean_forward_transfer": mean_hns(per_game.values()), "forward_transfer": per_game}
