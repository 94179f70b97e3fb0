"""The results page's numbers: each cell's normalised score matrix and continual-learning metrics,
their IQM and mean with 95% stratified-bootstrap confidence intervals (rliable) per group of seeds,
and the lambda a sweep chooses. Text and figures are made elsewhere; this module only computes.

Scores. R[k][g] is a cell's mean raw score on game g after the first k games of its sequence
(evaluate.py's game-end checkpoints), normalised as (score - random) / (reference - random):
random and reference from envs.games (HNS on Atari, MINATAR_REFERENCE_SCORES on MinAtar); a MinAtar
game missing there takes random from envs.games.MINATAR_RANDOM_SCORES and, as reference, what
fine-tuning scores on it right after training it as the first game of a sequence (single-game
training, same budget), the mean over seeds. Per cell, with g_1 the first game and g_K the last:

    final mean       mean over the sequence's games of R[K][g]
    retention        R[K][g_1]; and as a fraction of R[t_1][g_1], the score right after it was trained
    forgetting       mean over games first trained before K of max_{t_g <= k < K} R[k][g] - R[K][g]
                     (Chaudhry et al. 2018), signed; for two games R[1][g_1] - R[2][g_1]
    backward transfer mean over positions i < K of R[K][g_i] - R[i][g_i] (Lopez-Paz & Ranzato 2017)
                     (these three are ewc_evaluation/metrics.py's, as evaluate.py prints them: a
                     game without reference scores is left out of their means, not made NaN)
    new-game cost    R[K][g_K] minus fine-tuning's mean R[K][g_K] in the same order: what the
                     consolidation costs in learning the last game (negative: it learns it less well)
    forward transfer mean over games g first trained at position t_g > 1 of R[t_g][g] - 1: how well g
                     was learned after the earlier games against the reference agent trained on g
                     alone (normalised 1, at the references' budget; Progress & Compress's comparison)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from envs import games as game_table
from ewc_evaluation import metrics
from ewc_experiments.results_cells import CellData, ResultsError
from ewc_experiments.statistics import Estimate, column_estimates, mean_t_interval
from ewc_experiments.sweep_plan import split_method


@dataclass(frozen=True)
class Reference:
    random: float
    reference: float
    source: str
    seeds: int = 0
    """How many seeds a measured reference is the mean of (0: taken from a table)."""


def references(cells: list[CellData]) -> dict[str, Reference]:
    """Random and reference score of every game of the cells that has them (see the module docstring)."""
    measured = measured_references(cells)
    result = {}
    for game in dict.fromkeys(game for data in cells for game in data.games):
        if not game.startswith(game_table.MINATAR_PREFIX):
            if game in game_table.REFERENCE_SCORES:
                random_score, human = game_table.REFERENCE_SCORES[game]
                result[game] = Reference(random_score, human, "random and human, envs.games.REFERENCE_SCORES")
            continue
        short = game.removeprefix(game_table.MINATAR_PREFIX)
        if short in game_table.MINATAR_REFERENCE_SCORES:
            random_score, reference = game_table.MINATAR_REFERENCE_SCORES[short]
            result[game] = Reference(random_score, reference, "envs.games.MINATAR_REFERENCE_SCORES")
        elif game in measured:
            result[game] = measured[game]
    return result


def measured_references(cells: list[CellData]) -> dict[str, Reference]:
    """What the cells themselves measure for each MinAtar game, whatever envs.games holds: the
    random score from MINATAR_RANDOM_SCORES and fine-tuning's mean score right after training it
    (measured_reference). A sweep of single-game runs on seeds of their own measures the references
    that envs.games.MINATAR_REFERENCE_SCORES then holds (`--print-references`)."""
    result = {}
    for game in dict.fromkeys(game for data in cells for game in data.games):
        short = game.removeprefix(game_table.MINATAR_PREFIX)
        if game.startswith(game_table.MINATAR_PREFIX) and short in game_table.MINATAR_RANDOM_SCORES:
            measured = measured_reference(cells, game)
            if measured is not None:
                reference, seeds, where = measured
                result[game] = Reference(game_table.MINATAR_RANDOM_SCORES[short], reference, where, seeds)
    return result


def stale_references(measured: dict[str, Reference]) -> dict[str, Reference]:
    """The measured references that envs.games.MINATAR_REFERENCE_SCORES lacks or holds otherwise
    (to the three decimals reference_lines prints)."""
    stale = {}
    for game, ref in measured.items():
        held = game_table.MINATAR_REFERENCE_SCORES.get(game.removeprefix(game_table.MINATAR_PREFIX))
        if held is None or abs(held[0] - ref.random) > 1e-9 or abs(held[1] - ref.reference) > 5e-4:
            stale[game] = ref
    return stale


def measured_reference(cells: list[CellData], game: str) -> tuple[float, int, str] | None:
    """Fine-tuning's mean raw score on `game` right after training it: (mean over seeds, seeds, source).

    Cells where it is the first game are single-game training; only when there are none yet, cells
    that trained it later stand in (the page says so). Seeds, not cells, are averaged: two orders
    with the same first game and seed train that game identically.
    """
    finetune = [data for data in cells if data.cell.method == "finetune" and game in data.order]
    for first in (True, False):
        by_seed: dict[int, list[float]] = {}
        for data in finetune:
            position = data.order.index(game) + 1
            if (position == 1) == first:
                by_seed.setdefault(data.cell.seed, []).append(data.raw()[position - 1, data.games.index(game)])
        if by_seed:
            where = (
                "fine-tuning, trained on it first (single game)"
                if first
                else "fine-tuning, trained on it after other games (no single-game cell yet)"
            )
            return float(np.mean([np.mean(scores) for scores in by_seed.values()])), len(by_seed), where
    return None


def normalised(data: CellData, refs: dict[str, Reference]) -> np.ndarray:
    """R[k-1, j]: the cell's normalised score on games[j] after the first k games (NaN without references)."""
    raw = data.raw()
    for j, game in enumerate(data.games):
        ref = refs.get(game)
        if ref is None or ref.reference <= ref.random:
            raw[:, j] = math.nan
        else:
            raw[:, j] = (raw[:, j] - ref.random) / (ref.reference - ref.random)
    return raw


def cell_metrics(data: CellData, refs: dict[str, Reference]) -> dict[str, float]:
    """final_mean, total_clipped, retention, retention_fraction, forgetting, backward_transfer,
    last_game (R[K][g_K]), forward_transfer (NaN for a single game).

    Final mean, total clipped score (Σ_g min(R[K][g], 1): a game learned past the single-game agent
    cannot make up for another), forgetting and backward transfer are ewc_evaluation.metrics' (what
    evaluate.py and the sweep report print), computed from this cell's R."""
    R, order, column = normalised(data, refs), data.order, {game: j for j, game in enumerate(data.games)}
    K, g1 = len(order), column[order[0]]
    summary = metrics.summarise({k: dict(zip(data.games, row)) for k, row in enumerate(R.tolist(), start=1)}, order)
    before = R[0, g1]
    learned = [R[order.index(game), column[game]] - 1 for game in data.games if order.index(game) > 0]
    learned_later = [value for value in learned if np.isfinite(value)]  # a game without references left out, as above
    return {
        "final_mean": summary["final_mean_hns"],
        "total_clipped": summary["final_total_clipped_hns"],
        "retention": float(R[K - 1, g1]),
        "retention_fraction": float(R[K - 1, g1] / before) if before > 0 else math.nan,
        "forgetting": summary["mean_forgetting"],
        "backward_transfer": summary["backward_transfer"],
        "last_game": float(R[K - 1, column[order[-1]]]),
        "forward_transfer": float(np.mean(learned_later)) if learned_later else math.nan,
    }


def frozen_final_mean(data: CellData, refs: dict[str, Reference]) -> float:
    """The final mean of a network frozen after the first game: mean over the sequence's games of
    R[1][g], read from the cell's own game-1 checkpoint (no training after it)."""
    return float(np.nanmean(normalised(data, refs)[0]))


# ---- groups and their statistics ----

GroupKey = tuple[tuple[str, ...], str, float | None]
"""(order, method, lambda): the cells of a group differ by their seed alone."""

METRICS = ("final_mean", "retention", "retention_fraction", "forgetting", "backward_transfer", "cost")
"""Bootstrapped together, in one table per group (statistics.column_estimates)."""
LATER_METRICS = ("forward_transfer",)
"""Bootstrapped on their own: a column added to the table above changes its bootstrap draws, and so
would move every interval already published beside it."""
SUMMARY_METRICS = METRICS + LATER_METRICS
"""The summary table's columns, in order."""


def group_label(key: GroupKey) -> str:
    _, method, strength = key
    return method if strength is None else f"{method} λ={strength:g}"


def group_file_name(key: GroupKey) -> str:
    """`ewc-lambda1000`, `finetune`: the group as cell names spell it."""
    _, method, strength = key
    return method if strength is None else f"{method}-lambda{strength:g}"


def order_text(order: Iterable[str]) -> str:
    return " → ".join(order)


def seeds_text(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def grouped(cells: list[CellData]) -> dict[GroupKey, list[CellData]]:
    groups: dict[GroupKey, list[CellData]] = {}
    for data in cells:
        groups.setdefault((data.order, data.cell.method, data.cell.ewc_lambda), []).append(data)
    return groups


@dataclass
class GroupSummary:
    key: GroupKey
    cells: list[CellData]
    raw: dict[tuple[int, str], tuple[Estimate, Estimate]]
    """(k, game) -> (IQM, mean) of the raw score after the first k games."""
    norm: dict[tuple[int, str], tuple[Estimate, Estimate]]
    metrics: dict[str, tuple[Estimate, Estimate]]
    """SUMMARY_METRICS -> (IQM, mean); `cost` is NaN for fine-tuning itself and where no fine-tuning ran."""
    mean_matrix: np.ndarray
    """Mean normalised score over seeds, (positions, games)."""

    @property
    def seeds(self) -> int:
        return len(self.cells)


def summarise_group(key: GroupKey, cells: list[CellData], refs: dict[str, Reference], finetune_last: float) -> GroupSummary:
    """Every statistic of a group; `finetune_last` is fine-tuning's mean R[K][g_K] in the same order."""
    games, positions = cells[0].games, range(1, len(key[0]) + 1)
    raws = np.array([data.raw() for data in cells])
    norms = np.array([normalised(data, refs) for data in cells])
    per_cell = [cell_metrics(data, refs) for data in cells]
    for figures in per_cell:
        figures["cost"] = math.nan if split_method(key[1])[0] == "finetune" else figures["last_game"] - finetune_last
    cells_of = [(k, game) for k in positions for game in games]
    table = np.column_stack(
        [
            raws.reshape(len(cells), -1),
            norms.reshape(len(cells), -1),
            [[metrics[name] for name in METRICS] for metrics in per_cell],
        ]
    )
    estimates = column_estimates(table)
    size = len(cells_of)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN (a game without references)
        mean_matrix = np.nanmean(norms, axis=0) if len(cells) else norms
    return GroupSummary(
        key,
        cells,
        dict(zip(cells_of, estimates[:size])),
        dict(zip(cells_of, estimates[size : 2 * size])),
        {
            **dict(zip(METRICS, estimates[2 * size :])),
            **dict(zip(LATER_METRICS, column_estimates([[m[name] for name in LATER_METRICS] for m in per_cell]))),
        },
        mean_matrix,
    )


def finetune_last_game(cells: list[CellData], refs: dict[str, Reference], order: tuple[str, ...]) -> float:
    values = [cell_metrics(data, refs)["last_game"] for data in cells if data.order == order and data.cell.method == "finetune"]
    return float(np.mean(values)) if values else math.nan


def headline_groups(groups: dict[GroupKey, list[CellData]], refs: dict[str, Reference]) -> dict[GroupKey, list[CellData]]:
    """Per (order, method) the group with the most seeds: the runs at the chosen lambda, not the
    lambda sweep's single seeds; among equals the one with the highest mean final score."""
    best: dict[tuple, GroupKey] = {}

    def rank(key: GroupKey) -> tuple[int, float]:
        finals = [cell_metrics(data, refs)["final_mean"] for data in groups[key]]
        mean = float(np.mean(finals)) if finals else math.nan
        return len(groups[key]), -math.inf if math.isnan(mean) else mean

    for key in groups:
        slot = key[:2]
        if slot not in best or rank(key) > rank(best[slot]):
            best[slot] = key
    return {key: groups[key] for key in groups if key in best.values()}


def main_order_of(cells: list[CellData], main_order: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The sweep's main game order: the one given, else the order with the most cells."""
    if main_order is not None:
        return main_order
    if not cells:
        raise ResultsError("no evaluated cells")
    counts: dict[tuple[str, ...], int] = {}
    for data in cells:
        counts[data.order] = counts.get(data.order, 0) + 1
    return max(counts, key=lambda order: (counts[order], order))


# ---- lambda ----


@dataclass(frozen=True)
class LambdaRow:
    """One lambda of a selection sweep: each figure the mean over orders of the mean over seeds."""

    strength: float
    retention: float
    """R[K][g_1]: the first game, normalised, after the last."""
    last_game: float
    """R[K][g_K]: the last game, normalised, after it was trained."""
    final_mean: float
    """The selection criterion, fixed before the sweep: the final mean normalised score."""
    orders: int
    seeds: int


def lambda_sweep(cells: list[CellData], refs: dict[str, Reference], method: str) -> list[LambdaRow]:
    """Every lambda of `method` among the cells, one row each, pooled over the cells' orders and seeds.

    Each order weighs the same (its seeds are averaged first), so an order with more finished seeds
    does not tilt the choice. Meant for a selection sweep's own directory, whose seeds are never
    reported: the page's comparison uses other seeds.
    """
    by_strength: dict[float, dict[tuple[str, ...], list[dict[str, float]]]] = {}
    for data in cells:
        if data.cell.method == method and data.cell.ewc_lambda is not None:
            by_strength.setdefault(data.cell.ewc_lambda, {}).setdefault(data.order, []).append(cell_metrics(data, refs))
    rows = []
    for strength, by_order in sorted(by_strength.items()):

        def pooled(name: str, by_order=by_order) -> float:
            return float(np.mean([np.mean([figures[name] for figures in runs]) for runs in by_order.values()]))

        seeds = len({data.cell.seed for data in cells if data.cell.method == method and data.cell.ewc_lambda == strength})
        rows.append(LambdaRow(strength, pooled("retention"), pooled("last_game"), pooled("final_mean"), len(by_order), seeds))
    return rows


@dataclass(frozen=True)
class TradeoffPoint:
    """One lambda of a selection sweep: what the first game keeps against what the last game learns."""

    strength: float
    last_game: Estimate
    """R[K][g_K], mean over seeds (each seed's value averaged over the orders), 95% t-interval."""
    retention: Estimate
    """R[K][g_1], likewise."""


def tradeoff_points(cells: list[CellData], refs: dict[str, Reference], method: str) -> list[TradeoffPoint]:
    """Every lambda of `method`: the stability-plasticity trade-off, one point per lambda, with
    intervals over seeds (a seed's figure is its mean over the orders it ran)."""
    by_strength: dict[float, dict[int, list[dict[str, float]]]] = {}
    for data in cells:
        if data.cell.method == method and data.cell.ewc_lambda is not None:
            by_strength.setdefault(data.cell.ewc_lambda, {}).setdefault(data.cell.seed, []).append(cell_metrics(data, refs))
    points = []
    for strength, by_seed in sorted(by_strength.items()):

        def over_seeds(name: str, by_seed=by_seed) -> Estimate:
            return mean_t_interval(np.array([np.mean([figures[name] for figures in runs]) for runs in by_seed.values()]))

        points.append(TradeoffPoint(strength, over_seeds("last_game"), over_seeds("retention")))
    return points


def choose_lambda(cells: list[CellData], refs: dict[str, Reference], method: str) -> float:
    """The lambda of `method` with the highest final mean normalised score, pooled over the cells'
    orders and seeds (lambda_sweep; the smallest such lambda on a tie). Every lambda must have the
    same orders and number of seeds: a lambda with one lucky seed cannot outrank one with ten."""
    swept = lambda_sweep(cells, refs, method)
    if not swept:
        raise ResultsError(f"no {method} cell with a lambda is evaluated yet")
    if len({(row.orders, row.seeds) for row in swept}) > 1:
        raise ResultsError(
            f"the {method} lambdas have unequal orders or seeds ("
            + ", ".join(f"{row.strength:g}: {row.orders} orders, {seeds_text(row.seeds)}" for row in swept)
            + "): finish the selection sweep first"
        )
    rows = [row for row in swept if not math.isnan(row.final_mean)]
    if not rows:
        raise ResultsError(
            f"the {method} cells have no final normalised score: a game has no reference "
            "(envs.games.MINATAR_REFERENCE_SCORES, or fine-tuning cells that train it first)"
        )
    return max(rows, key=lambda row: (row.final_mean, -row.strength)).strength


def reference_lines(refs: dict[str, Reference], steps_per_game: int | None = None) -> str:
    """The measured MinAtar references as lines to paste into envs.games.MINATAR_REFERENCE_SCORES."""
    budget = f", {steps_per_game:,} agent steps" if steps_per_game else ""
    lines = []
    for game, ref in refs.items():
        if ref.seeds and game.startswith(game_table.MINATAR_PREFIX):
            how = "alone" if "single game" in ref.source else "after other games (NOT single-game)"
            lines.append(
                f'    "{game.removeprefix(game_table.MINATAR_PREFIX)}": ({ref.random:g}, {ref.reference:.3f}),'
                f"  # random: MINATAR_RANDOM_SCORES; reference: fine-tuning trained on it {how}{budget}, "
                f"mean of {seeds_text(ref.seeds)}"
            )
    return "\n".join(lines)
