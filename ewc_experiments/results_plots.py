"""The results page's figures: every game's continual-evaluation score across a sequence, a heatmap of
each group's score matrix, and each game's learning curve when it is trained first. They are drawn on
matplotlib `Figure` objects rather than through pyplot, so no display or global figure state is
involved and a figure is freed when its function returns.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ewc_experiments.results_cells import CellData
from ewc_experiments.results_scores import (
    GroupKey,
    GroupSummary,
    Reference,
    TradeoffPoint,
    group_label,
    order_text,
    seeds_text,
)

BAND_REPS = 2_000
"""Bootstrap resamples behind the plots' shaded 95% bands (the tables use statistics.BOOTSTRAP_REPS)."""
SMOOTHING = 25
"""Points in the moving average over the saved training-episode returns of the single-game plot."""


def _band(values: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) of each column, with a 95% percentile-bootstrap band (none for one run)."""
    mean = values.mean(axis=0)
    if len(values) < 2:
        return mean, mean, mean
    picks = np.random.default_rng(seed).integers(0, len(values), size=(BAND_REPS, len(values)))
    resampled = values[picks].mean(axis=1)
    return mean, np.percentile(resampled, 2.5, axis=0), np.percentile(resampled, 97.5, axis=0)


def _curve_matrix(cells: list[CellData], tag: str, up_to: float = math.inf) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values (cells, steps)) at the steps every cell logged `tag` at; None when none did."""
    series = [dict((step, value) for step, value in data.curves.get(tag, []) if step <= up_to) for data in cells]
    series = [points for points in series if points]
    steps = sorted(set.intersection(*(set(points) for points in series))) if series else []
    if not steps:
        return None
    return np.array(steps), np.array([[points[step] for step in steps] for points in series])


def plot_curves(order: tuple[str, ...], groups: dict[GroupKey, list[CellData]], path: Path) -> bool:
    """Every game's continual-evaluation score across the sequence, one line per group; False if no curves."""
    games = list(dict.fromkeys(order))
    figure = Figure(figsize=(4.2 * len(games), 3.6))
    drawn = False
    for index, game in enumerate(games):
        axes = figure.add_subplot(1, len(games), index + 1)
        for key, cells in groups.items():
            curve = _curve_matrix(cells, f"eval/{game}/score")
            if curve is None:
                continue
            steps, values = curve
            mean, low, high = _band(values)
            (line,) = axes.plot(steps, mean, marker=".", label=f"{group_label(key)} ({seeds_text(len(values))})")
            axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
            drawn = True
        steps_per_game = next(iter(groups.values()))[0].steps_per_game
        for k in range(1, len(order)):
            axes.axvline(k * steps_per_game, color="grey", linestyle=":", linewidth=1)
        axes.set_title(game)
        axes.set_xlabel("agent steps over the sequence")
        if index == 0:
            axes.set_ylabel("evaluation score (raw)")
    if drawn:
        figure.axes[0].legend(*figure.axes[-1].get_legend_handles_labels(), fontsize=7)
    figure.suptitle(f"{order_text(order)}: mean over seeds, 95% bootstrap band; dotted: game boundaries", fontsize=9)
    figure.tight_layout()
    if drawn:
        figure.savefig(path, dpi=110)
    return drawn


def plot_matrix(summary: GroupSummary, path: Path) -> None:
    """Heatmap of the mean normalised score over seeds: rows after game k, columns games."""
    order, games = summary.key[0], summary.cells[0].games
    matrix = summary.mean_matrix
    figure = Figure(figsize=(2.8 + 1.5 * len(games), 1.8 + 0.6 * len(order)))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axes, label="normalised score")
    axes.set_xticks(range(len(games)), games, rotation=20, ha="right", fontsize=8)
    axes.set_yticks(range(len(order)), [f"after game {k}" for k in range(1, len(order) + 1)], fontsize=8)
    middle = (image.norm.vmin + image.norm.vmax) / 2 if np.isfinite(matrix).any() else 0.0
    for (i, j), value in np.ndenumerate(matrix):
        if not math.isnan(value):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < middle else "black")
    axes.set_title(f"{group_label(summary.key)}, {order_text(order)} ({seeds_text(summary.seeds)})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _smooth(values: np.ndarray, window: int = SMOOTHING) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_single_game(cells: list[CellData], refs: dict[str, Reference], path: Path) -> list[str]:
    """Each game's learning curve while trained first by fine-tuning; returns the games drawn."""
    games = [
        game
        for game in dict.fromkeys(data.order[0] for data in cells)
        if any(data.order[0] == game and data.cell.method == "finetune" and data.curves for data in cells)
    ]
    if not games:
        return []
    figure = Figure(figsize=(max(5.5, 4.2 * len(games)), 3.8))
    for index, game in enumerate(games):
        axes = figure.add_subplot(1, len(games), index + 1)
        first = {data.cell.seed: data for data in cells if data.order[0] == game and data.cell.method == "finetune"}
        budget = next(iter(first.values())).steps_per_game
        for number, data in enumerate(first.values()):
            points = np.array([point for point in data.curves.get(f"charts/{game}/episodic_return", []) if point[0] <= budget])
            if len(points):
                smoothed = _smooth(points[:, 1])
                axes.plot(
                    points[len(points) - len(smoothed) :, 0],
                    smoothed,
                    color="tab:grey",
                    alpha=0.5,
                    linewidth=0.8,
                    label="training episodes (smoothed), each seed" if number == 0 else None,
                )
        curve = _curve_matrix(list(first.values()), f"eval/{game}/score", up_to=budget)
        if curve is not None:
            steps, values = curve
            mean, low, high = _band(values)
            axes.plot(steps, mean, marker="o", color="tab:blue", label=f"evaluation, mean of {seeds_text(len(values))}")
            axes.fill_between(steps, low, high, color="tab:blue", alpha=0.2)
        if game in refs:
            axes.axhline(refs[game].random, color="tab:red", linestyle="--", linewidth=1, label="random")
            axes.axhline(refs[game].reference, color="black", linestyle=":", linewidth=1, label="reference")
        axes.set_title(game)
        axes.set_xlabel("agent steps")
        if index == 0:
            axes.set_ylabel("score (raw)")
        axes.legend(fontsize=7)
    figure.suptitle("Fine-tuning, the game trained first", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return games


def plot_tradeoff(points_by_method: dict[str, list[TradeoffPoint]], path: Path) -> None:
    """Retention of the first game (y) against the last game's score (x), normalised, one line per
    method through its lambdas (each labelled), with 95% t-intervals over the selection seeds."""
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    for method, points in points_by_method.items():
        x = np.array([point.last_game.value for point in points])
        y = np.array([point.retention.value for point in points])
        x_error = np.array([[p.last_game.value - p.last_game.low, p.last_game.high - p.last_game.value] for p in points]).T
        y_error = np.array([[p.retention.value - p.retention.low, p.retention.high - p.retention.value] for p in points]).T
        line = axes.errorbar(x, y, xerr=np.nan_to_num(x_error), yerr=np.nan_to_num(y_error), marker="o", capsize=3, label=method)
        for point in points:
            axes.annotate(
                f"λ={point.strength:g}",
                (point.last_game.value, point.retention.value),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color=line[0].get_color(),
            )
    axes.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    axes.axvline(1.0, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xlabel("last game after training it (normalised)")
    axes.set_ylabel("first game after the last (normalised)")
    axes.set_title("Keeping the first game against learning the last, over each lambda grid", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
