"""The results page's lambda section: per method, each lambda of its selection sweep pooled over orders
and seeds, the lambda chosen from them, and the trade-off between keeping the first game and learning
the last one across the grid (a figure with intervals over the selection seeds)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ewc_experiments.results_cells import CellData, ResultsError
from ewc_experiments.results_plots import plot_tradeoff
from ewc_experiments.results_scores import (
    GroupKey,
    Reference,
    choose_lambda,
    lambda_sweep,
    seeds_text,
    tradeoff_points,
)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def lambda_lines(
    swept: list[CellData],
    refs: dict[str, Reference],
    headline: dict[GroupKey, list[CellData]],
    main: tuple[str, ...],
    short_name: str,
    figure: Path,
    link: Callable[[Path], str],
) -> tuple[list[str], dict[str, float]]:
    """The section's markdown and each swept method's chosen lambda (the figure is drawn at `figure`)."""
    lines, chosen, points = ["## Lambda sweeps", ""], {}, {}
    for method in dict.fromkeys(data.cell.method for data in swept):
        rows = lambda_sweep(swept, refs, method)
        if len(rows) < 2:
            continue
        try:
            chosen[method] = choose_lambda(swept, refs, method)
        except ResultsError:
            pass
        points[method] = tradeoff_points(swept, refs, method)
        lines += [
            f"### {method}",
            "",
            "Each figure: the mean over the orders of the mean over seeds, normalised.",
            "",
            "| lambda | orders | seeds | first game after the last | last game | final mean |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            figures = (row.retention, row.last_game, row.final_mean)
            lines.append(f"| {row.strength:g} | {row.orders} | {row.seeds} | " + " | ".join(map(_number, figures)) + " |")
        most = next((key for key in headline if key[0] == main and key[1] == method), None)
        used = f"; the lambda run with the most seeds: {most[2]:g} ({seeds_text(len(headline[most]))})" if most else ""
        best = f"{chosen[method]:g}" if method in chosen else "n/a"
        lines += ["", f"Highest final mean {short_name} with these references: λ = {best}{used}.", ""]
    if points:
        plot_tradeoff(points, figure)
        lines += [f"![retention of the first game against the last game's score, per lambda]({link(figure)})", ""]
    else:
        lines += ["No method has a lambda sweep (two or more lambdas) yet.", ""]
    return lines, chosen
