"""The sweep's one report: a table per method, a plot of mean HNS after each game, a CSV of every cell.

    <sweep>/report.md     per method, one row per (lambda, order): mean ± std over seeds of the final
                          mean HNS and the mean forgetting, and a row over all orders when there are several
    <sweep>/mean_hns.png  mean HNS after each game, one line per method and lambda, ± std band
    <sweep>/cells.csv     one line per cell: its settings, how it ended, its metrics

Every cell's metrics are read from the eval/eval.json that evaluate.py wrote into it (definitions in
docs/evaluation.md); nothing is computed here but means and standard deviations across cells.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from ewc_experiments.sweep_plan import EVALUATED, Cell, cell_state, read_evaluation

REPORT, PLOT, TABLE = "report.md", "mean_hns.png", "cells.csv"


@dataclass
class CellResult:
    cell: Cell
    run_dir: Path
    metrics: dict[str, object] | None
    """The cell's continual-learning metrics; None when it has no whole evaluation."""
    error: str = ""
    """Why it has none: the failing command's error line."""


def cell_result(cell: Cell, run_dir: Path, error: str = "") -> CellResult:
    """A cell as its files leave it: metrics from its eval.json once evaluated, else the error it failed with."""
    if cell_state(run_dir, cell.order) != EVALUATED:
        return CellResult(cell, run_dir, None, error or "not evaluated")
    return CellResult(cell, run_dir, _metrics_from_json(read_evaluation(run_dir)["metrics"]))


def _metrics_from_json(saved: dict) -> dict[str, object]:
    """eval.json's metrics with NaN back where JSON has null and game positions back to ints."""
    def number(value: float | None) -> float:
        return math.nan if value is None else float(value)

    return {
        "final_mean_hns": number(saved["final_mean_hns"]),
        "mean_forgetting": number(saved["mean_forgetting"]),
        "backward_transfer": number(saved["backward_transfer"]),
        "mean_hns_after_game": {int(k): number(value) for k, value in saved["mean_hns_after_game"].items()},
    }


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


def _row(strength: str, label: str, group: list[CellResult]) -> str:
    evaluated = [result.metrics for result in group if result.metrics]
    count = f"{len(evaluated)}" if len(evaluated) == len(group) else f"{len(evaluated)} of {len(group)}"
    final = _mean_std_text([metrics["final_mean_hns"] for metrics in evaluated])
    forgetting = _mean_std_text([metrics["mean_forgetting"] for metrics in evaluated])
    return f"| {strength} | {label} | {count} | {final} | {forgetting} |"


def method_tables(results: list[CellResult]) -> list[str]:
    """One table per method; a row per (lambda, order) is over seeds, an `all orders` row over every cell."""
    lines: list[str] = []
    for method, of_method in _grouped(results, lambda result: result.cell.method).items():
        lines += [f"## {method}", "", "| lambda | order | cells | final mean HNS | mean forgetting |",
                  "|---|---|---|---|---|"]
        for of_strength in _grouped(of_method, lambda result: result.cell.ewc_lambda).values():
            strength = _strength(of_strength[0].cell)
            by_order = _grouped(of_strength, lambda result: result.cell.order)
            lines += [_row(strength, " → ".join(order), group) for order, group in by_order.items()]
            if len(by_order) > 1:
                lines.append(_row(strength, f"all {len(by_order)} orders", of_strength))
        lines.append("")
    return lines


def report_markdown(sweep_dir: Path, results: list[CellResult]) -> str:
    failed = [result for result in results if result.metrics is None]
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(results)} cells, {len(results) - len(failed)} evaluated, {len(failed)} without an evaluation. "
        "Each cell's game-end checkpoints were scored by evaluate.py with the cell's eval protocol; metrics in "
        "human-normalised score (docs/evaluation.md). A table cell is the mean ± sample standard deviation (n-1) "
        f"over the evaluated cells of its row; `{TABLE}` has every cell.",
        "",
        *method_tables(results),
        f"![mean HNS after each game]({PLOT})",
        "",
    ]
    if failed:
        lines += ["## Cells without an evaluation", ""]
        lines += [f"- `{result.cell.name}`: {result.error} (log: logs/{result.cell.name}.log)" for result in failed]
        lines.append("")
    return "\n".join(lines)


def write_cells_csv(results: list[CellResult], path: Path) -> None:
    positions = range(1, max(len(result.cell.order) for result in results) + 1)
    after = [f"mean_hns_after_game_{k}" for k in positions]
    columns = ["cell", "order", "method", "ewc_lambda", "seed", "status", "final_mean_hns", "mean_forgetting",
               "backward_transfer", *after, "run_dir", "error"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for result in results:
            cell, metrics = result.cell, result.metrics or {}
            curve = metrics.get("mean_hns_after_game", {})
            writer.writerow({
                "cell": cell.name, "order": ",".join(cell.order), "method": cell.method,
                "ewc_lambda": "" if cell.ewc_lambda is None else cell.ewc_lambda, "seed": cell.seed,
                "status": "evaluated" if result.metrics else "failed",
                **{name: metrics.get(name, "") for name in ("final_mean_hns", "mean_forgetting", "backward_transfer")},
                **{column: curve.get(k, "") for column, k in zip(after, positions)},
                "run_dir": str(result.run_dir), "error": result.error,
            })


def _line_label(result: CellResult) -> str:
    cell = result.cell
    return cell.method if cell.ewc_lambda is None else f"{cell.method} λ={cell.ewc_lambda:g}"


def plot_mean_hns(results: list[CellResult], path: Path) -> None:
    """Mean HNS after each game, one line per method and lambda: mean over its cells, ± std shaded."""
    figure = Figure(figsize=(6.5, 4.0))
    axes = figure.add_subplot()
    evaluated = [result for result in results if result.metrics]
    for label, group in _grouped(evaluated, _line_label).items():
        curves = [result.metrics["mean_hns_after_game"] for result in group]
        positions = sorted({k for curve in curves for k in curve})
        stats = [mean_and_std([curve.get(k, math.nan) for curve in curves]) for k in positions]
        means = [mean for mean, _ in stats]
        spreads = [0.0 if math.isnan(std) else std for _, std in stats]
        line, = axes.plot(positions, means, marker="o", label=f"{label} ({len(group)} cells)")
        axes.fill_between(positions, [m - s for m, s in zip(means, spreads)], [m + s for m, s in zip(means, spreads)],
                          color=line.get_color(), alpha=0.2)
    longest = max(len(result.cell.order) for result in results)
    axes.set_xticks(range(1, longest + 1), [f"after game {k}" for k in range(1, longest + 1)])
    axes.set_ylabel("mean human-normalised score")
    axes.set_title("Mean HNS over the sequence's games (mean ± std over cells)")
    if evaluated:
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
