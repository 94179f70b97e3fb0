"""The sweep's one report: a table per method, a plot of mean normalised score after each game, a CSV of every cell.

    <sweep>/report.md     per method, one row per (lambda, order): mean ± std over seeds of the final
                          mean normalised score, the final total clipped normalised score (Kirkpatrick
                          et al.'s Fig. 4 metric) and the mean forgetting, and a row over all orders when
                          there are several; beside it the IQM [95% CI] of the final mean normalised score
    <sweep>/mean_hns.png  mean normalised score after each game, one line per method and lambda, ± std band
    <sweep>/cells.csv     one line per cell: its settings, how it ended, its metrics, its agent steps/s

The report also sums the cells' agent steps/s while learning (agent_steps_per_second): the sweep's
throughput when its cells train at the same time, e.g. four on one GPU with `--gpus-per-cell 0.25`.

"Normalised" is the family's score: HNS on Atari, the MinAtar-normalised score on MinAtar
(envs.families). Every cell's metrics come from the episode scores in the eval/eval.json that
evaluate.py wrote into it, through the same `summarise` (definitions in docs/evaluation.md), so a cell
evaluated before a definition changed reads as a new one. Across cells, only means, standard
deviations and IQMs with their bootstrap intervals (rliable, through ewc_experiments/statistics.py).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from envs.families import family_of_run
from ewc_experiments.eval_matrix import saved_metrics
from ewc_experiments.results_cells import RESUMED_WITHOUT_REPLAY, read_provenance
from ewc_experiments.statistics import StatisticsError, interval_estimates
from ewc_experiments.sweep_plan import EVALUATED, Cell, cell_state, read_evaluation
from ewc_training.config import config_from_dict, load_yaml

REPORT, PLOT, TABLE = "report.md", "mean_hns.png", "cells.csv"
NO_RLIABLE = "n/a (pip install 'ewc-atari[report]')"
"""An IQM's place in the report when rliable is not installed."""


@dataclass
class CellResult:
    cell: Cell
    run_dir: Path
    metrics: dict[str, object] | None
    """The cell's continual-learning metrics; None when it has no whole evaluation."""
    error: str = ""
    """Why it has none: the failing command's error line."""
    steps_per_second: float = math.nan
    """Its agent steps/s while learning (agent_steps_per_second); NaN when it logged none."""
    replay_refilled: str = ""
    """Where a resume refilled its replay mid-game (results_cells.read_provenance); "" if never."""


def cell_result(cell: Cell, run_dir: Path, error: str = "") -> CellResult:
    """A cell as its files leave it: metrics from its eval.json once evaluated, else the error it failed with.

    The metrics are recomputed from the file's episode scores (eval_matrix.saved_metrics), so cells
    evaluated before a metric's definition changed are reported under today's definition."""
    speed, refilled = agent_steps_per_second(run_dir), read_provenance(run_dir).get(RESUMED_WITHOUT_REPLAY, "")
    if cell_state(run_dir, cell.order) != EVALUATED:
        return CellResult(cell, run_dir, None, error or "not evaluated", speed, refilled)
    config = config_from_dict(load_yaml(run_dir / "config.yaml")) if (run_dir / "config.yaml").is_file() else None
    return CellResult(cell, run_dir, saved_metrics(read_evaluation(run_dir), config), "", speed, refilled)


SPEED_TAG = "charts/SPS"
"""The agent steps/s train.py logs every `run.log_every` steps (ewc_training/progress.py)."""


def agent_steps_per_second(run_dir: Path) -> float:
    """A run's agent steps/s while learning: the mean of its `charts/SPS` points whose interval lies
    after its game's `agent.learning_starts` (step in game >= learning_starts + log_every), so that
    the acting-only start of each game does not count. NaN for a run that logged none (too short to
    learn, or restored from saved results without its TensorBoard events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    try:
        config = config_from_dict(load_yaml(run_dir / "config.yaml"))
    except (OSError, ValueError):  # ConfigError is a ValueError
        return math.nan
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if SPEED_TAG not in events.Tags()["scalars"]:
        return math.nan
    per_game, since = config.run.steps_per_game, config.agent.learning_starts + config.run.log_every
    speeds = [point.value for point in events.Scalars(SPEED_TAG) if (point.step - 1) % per_game + 1 >= since]
    return statistics.fmean(speeds) if speeds else math.nan


def throughput_lines(results: list[CellResult]) -> list[str]:
    """The report's throughput: the cells' agent steps/s while learning, summed."""
    speeds = [result.steps_per_second for result in results if not math.isnan(result.steps_per_second)]
    if not speeds:
        return ["Agent steps/s while learning: n/a (no cell logged `charts/SPS` after its learning started).", ""]
    return [
        f"Agent steps/s while learning, summed over the {len(speeds)} cells that logged it: **{sum(speeds):,.0f}** "
        f"(per cell {min(speeds):,.0f} to {max(speeds):,.0f}: the mean of its `{SPEED_TAG}` points after "
        "`learning_starts`). The sum is the sweep's throughput when those cells train at the same time "
        "(e.g. `--gpus-per-cell 0.25` trains four on one GPU).",
        "",
    ]


def write_report(sweep_dir: Path, results: list[CellResult]) -> Path:
    """Write report.md, mean_hns.png and cells.csv into the sweep directory; returns report.md."""
    plot_mean_hns(results, sweep_dir / PLOT)
    write_cells_csv(results, sweep_dir / TABLE)
    report = sweep_dir / REPORT
    report.write_text(report_markdown(sweep_dir, results))
    return report


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1) of the values that are not NaN; NaN where undefined."""
    kept = [value for value in values if not math.isnan(value)]
    mean = statistics.fmean(kept) if kept else math.nan
    return mean, statistics.stdev(kept) if len(kept) > 1 else math.nan


def _mean_std_text(values: list[float]) -> str:
    mean, std = mean_and_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _grouped(results: list[CellResult], key: Callable[[CellResult], Hashable]) -> dict[Hashable, list[CellResult]]:
    """Results by key, keys in the order they first appear (the order the sweep was asked in)."""
    groups: dict[Hashable, list[CellResult]] = {}
    for result in results:
        groups.setdefault(key(result), []).append(result)
    return groups


def _strength(cell: Cell) -> str:
    return "-" if cell.ewc_lambda is None else f"{cell.ewc_lambda:g}"


TABLE_METRICS = ("final_mean_hns", "final_total_clipped_hns", "mean_forgetting")
"""The method tables' columns, each a mean ± std over a row's cells."""
CSV_METRICS = (*TABLE_METRICS, "backward_transfer")

RowKey = tuple[str, float | None, tuple[str, ...] | None]
"""A table row: (method, lambda, order); order None for the row over every order."""


def _count(group: list[CellResult]) -> str:
    evaluated = sum(1 for result in group if result.metrics)
    return f"{evaluated}" if evaluated == len(group) else f"{evaluated} of {len(group)}"


def _row(strength: str, label: str, group: list[CellResult]) -> str:
    evaluated = [result.metrics for result in group if result.metrics]
    columns = [_mean_std_text([metrics.get(name, math.nan) for metrics in evaluated]) for name in TABLE_METRICS]
    return f"| {strength} | {label} | {_count(group)} | " + " | ".join(columns) + " |"


def table_rows(results: list[CellResult]) -> dict[RowKey, tuple[str, str, list[CellResult]]]:
    """Every row of the method tables, in their order: key -> (lambda text, order text, its cells).
    A row per (method, lambda, order) is over seeds; an `all orders` row over every cell of the lambda."""
    rows: dict[RowKey, tuple[str, str, list[CellResult]]] = {}
    for method, of_method in _grouped(results, lambda result: result.cell.method).items():
        for strength_value, of_strength in _grouped(of_method, lambda result: result.cell.ewc_lambda).items():
            strength = _strength(of_strength[0].cell)
            by_order = _grouped(of_strength, lambda result: result.cell.order)
            for order, group in by_order.items():
                rows[(method, strength_value, order)] = (strength, " → ".join(order), group)
            if len(by_order) > 1:
                rows[(method, strength_value, None)] = (strength, f"all {len(by_order)} orders", of_strength)
    return rows


def final_score_iqms(results: list[CellResult]) -> dict[RowKey, str]:
    """Per table row, the IQM [95% CI] of its cells' final mean normalised score (NaN cells left out).

    One stratified bootstrap per row (statistics.interval_estimates): a few seconds each on a CPU.
    "n/a" for a row without a score (e.g. MinAtar games without references), and NO_RLIABLE for
    every row when rliable is not installed.
    """
    rows = table_rows(results)
    finals = {
        key: [
            result.metrics["final_mean_hns"]
            for result in group
            if result.metrics and not math.isnan(result.metrics["final_mean_hns"])
        ]
        for key, (_, _, group) in rows.items()
    }
    texts = {key: "n/a" for key in rows}
    names = {repr(key): key for key, values in finals.items() if values}
    if not names:
        return texts
    try:
        estimates = interval_estimates({name: np.array(finals[key])[:, None] for name, key in names.items()}, "iqm")
    except StatisticsError:
        return {key: NO_RLIABLE for key in rows}
    for name, key in names.items():
        evaluated = sum(1 for result in rows[key][2] if result.metrics)
        scored = f" ({len(finals[key])} with a score)" if len(finals[key]) < evaluated else ""
        texts[key] = estimates[name].text(3) + scored
    return texts


def method_tables(results: list[CellResult], iqms: dict[RowKey, str] | None = None) -> list[str]:
    """One table per method (mean ± std over each row's cells); with `iqms`, a second table beside it
    with each row's IQM [95% CI] (final_score_iqms)."""
    lines: list[str] = []
    rows = table_rows(results)
    for method in dict.fromkeys(key[0] for key in rows):
        of_method = {key: row for key, row in rows.items() if key[0] == method}
        lines += [
            f"## {method}",
            "",
            "| lambda | order | cells | final mean normalised score | final total clipped normalised score | mean forgetting |",
            "|---|---|---|---|---|---|",
        ]
        lines += [_row(strength, label, group) for strength, label, group in of_method.values()]
        if iqms is not None:
            lines += ["", "| lambda | order | cells | final mean normalised score: IQM [95% CI] |", "|---|---|---|---|"]
            lines += [
                f"| {strength} | {label} | {_count(group)} | {iqms[key]} |" for key, (strength, label, group) in of_method.items()
            ]
        lines.append("")
    return lines


def score_name(results: list[CellResult]) -> str:
    """The normalisation of the sweep's scores (envs.families), e.g. "human-normalised score (HNS)"."""
    try:
        return family_of_run([game for result in results for game in result.cell.order]).score_name
    except ValueError:  # no cells, or games of two families
        return "normalised score"


def report_markdown(sweep_dir: Path, results: list[CellResult]) -> str:
    failed = [result for result in results if result.metrics is None]
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(results)} cells, {len(results) - len(failed)} evaluated, {len(failed)} without an evaluation. "
        "Each cell's game-end checkpoints were scored by evaluate.py with the cell's eval protocol; scores are "
        f"normalised: the {score_name(results)}; definitions in docs/evaluation.md. A table cell is the mean ± sample standard "
        "deviation (n-1) over the evaluated cells of its row, and the IQM (interquartile mean) comes with a 95% "
        f"stratified-bootstrap confidence interval (rliable); `{TABLE}` has every cell.",
        "",
        *method_tables(results, final_score_iqms(results)),
        f"![mean normalised score after each game]({PLOT})",
        "",
        *throughput_lines(results),
    ]
    resumed = [result for result in results if result.replay_refilled]
    if resumed:
        lines += ["## Cells resumed mid-game without a saved replay", ""]
        lines += ["Each refilled its replay and paused learning meanwhile, so it differs from an uninterrupted run:", ""]
        lines += [f"- `{result.cell.name}`: {result.replay_refilled}" for result in resumed]
        lines.append("")
    if failed:
        lines += ["## Cells without an evaluation", ""]
        lines += [f"- `{result.cell.name}`: {result.error} (log: logs/{result.cell.name}.log)" for result in failed]
        lines.append("")
    return "\n".join(lines)


def write_cells_csv(results: list[CellResult], path: Path) -> None:
    positions = range(1, max(len(result.cell.order) for result in results) + 1)
    after = [f"mean_hns_after_game_{k}" for k in positions]
    columns = [
        "cell",
        "order",
        "method",
        "ewc_lambda",
        "seed",
        "status",
        *CSV_METRICS,
        *after,
        "agent_steps_per_s",
        "run_dir",
        "error",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for result in results:
            cell, metrics = result.cell, result.metrics or {}
            curve = metrics.get("mean_hns_after_game", {})
            writer.writerow(
                {
                    "cell": cell.name,
                    "order": ",".join(cell.order),
                    "method": cell.method,
                    "ewc_lambda": "" if cell.ewc_lambda is None else cell.ewc_lambda,
                    "seed": cell.seed,
                    "status": "evaluated" if result.metrics else "failed",
                    **{name: metrics.get(name, "") for name in CSV_METRICS},
                    **{column: curve.get(k, "") for column, k in zip(after, positions)},
                    "agent_steps_per_s": "" if math.isnan(result.steps_per_second) else f"{result.steps_per_second:.1f}",
                    "run_dir": str(result.run_dir),
                    "error": result.error,
                }
            )


def _line_label(result: CellResult) -> str:
    cell = result.cell
    return cell.method if cell.ewc_lambda is None else f"{cell.method} λ={cell.ewc_lambda:g}"


def plot_mean_hns(results: list[CellResult], path: Path) -> None:
    """Mean normalised score after each game, one line per method and lambda: mean over its cells, ± std shaded."""
    figure = Figure(figsize=(6.5, 4.0))
    axes = figure.add_subplot()
    evaluated = [result for result in results if result.metrics]
    for label, group in _grouped(evaluated, _line_label).items():
        curves = [result.metrics["mean_hns_after_game"] for result in group]
        positions = sorted({k for curve in curves for k in curve})
        stats = [mean_and_std([curve.get(k, math.nan) for curve in curves]) for k in positions]
        means = [mean for mean, _ in stats]
        spreads = [0.0 if math.isnan(std) else std for _, std in stats]
        (line,) = axes.plot(positions, means, marker="o", label=f"{label} ({len(group)} cells)")
        axes.fill_between(
            positions,
            [m - s for m, s in zip(means, spreads)],
            [m + s for m, s in zip(means, spreads)],
            color=line.get_color(),
            alpha=0.2,
        )
    longest = max(len(result.cell.order) for result in results)
    axes.set_xticks(range(1, longest + 1), [f"after game {k}" for k in range(1, longest + 1)])
    name = score_name(results).split(" (")[0]
    axes.set_ylabel(f"mean {name}")
    axes.set_title(f"Mean {name} over the sequence's games (mean ± std over cells)", fontsize=9)
    if evaluated:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
