"""A sweep's results page: per method and game order, the score matrix and the continual-learning
metrics as IQM and mean with 95% stratified-bootstrap confidence intervals (rliable), the plots,
and every cell's compact results, so the page can be rebuilt after the sweep directory is gone.

    python -m ewc_experiments.results_page SWEEP_DIR --out docs/results/minatar.md
    python -m ewc_experiments.results_page docs/results/minatar/cells --out docs/results/minatar.md
    python -m ewc_experiments.results_page SWEEP_DIR --choose-lambda ewc     # prints the lambda, e.g. 1000
    python -m ewc_experiments.results_page SWEEP_DIR --print-references      # lines for envs/games.py

Beside OUT, in the folder named like it without `.md` (docs/results/minatar/):

    cells/<cell>.json          the cell's eval/eval.json, plus its config and wall times
    cells/<cell>.curves.json   its continual-evaluation curves {tag: [[step, value], ...]}: every eval/
                               tag, and charts/<game>/episodic_return averaged down to <= 500 points
    curves_<order>.png         every game's evaluation score across the sequence, one line per method
    matrix_<group>_<order>.png normalised score after each game, mean over seeds
    single_game.png            each game's learning curve when it is trained first (fine-tuning)

File names are the cell's or order's name with `:` written `_` (`minatar:breakout` is a URL scheme
in a markdown link, and no file name on Windows).

Scores. R[k][g] is a cell's mean raw score on game g after the first k games of its sequence
(evaluate.py's game-end checkpoints), normalised as (score - random) / (reference - random):
random and reference from envs.games (HNS on Atari, MINATAR_REFERENCE_SCORES on MinAtar); a MinAtar
game missing there takes random from MINATAR_RANDOM_SCORES below and, as reference, what fine-tuning
scores on it right after training it as the first game of a sequence (single-game training, same
budget), the mean over seeds. Per cell, with g_1 the first game and g_K the last:

    final mean       mean over the sequence's games of R[K][g]
    retention        R[K][g_1]; and as a fraction of R[t_1][g_1], the score right after it was trained
    forgetting       mean over games first trained before K of max_{t_g <= k < K} R[k][g] - R[K][g]
                     (Chaudhry et al. 2018), signed; for two games R[1][g_1] - R[2][g_1]
    backward transfer mean over positions i < K of R[K][g_i] - R[i][g_i] (Lopez-Paz & Ranzato 2017)
                     (these three are ewc_evaluation/metrics.py's, as evaluate.py prints them: a
                     game without reference scores is left out of their means, not made NaN)
    new-game cost    R[K][g_K] minus fine-tuning's mean R[K][g_K] in the same order: what the
                     consolidation costs in learning the last game (negative: it learns it less well)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from envs import games as game_table
from envs.families import family_of_run
from ewc_evaluation import metrics
from ewc_experiments import statistics as stats
from ewc_experiments.cli import fail
from ewc_experiments.statistics import Estimate, column_estimates
from ewc_experiments.sweep_plan import (
    INTERRUPTED,
    NEW,
    TRAINED,
    Cell,
    cell_dir,
    cell_state,
    log_path,
    read_evaluation,
    uses_lambda,
)
from ewc_training import run_dir as paths
from ewc_training.config import config_from_dict, load_yaml

MINATAR_RANDOM_SCORES = game_table.MINATAR_RANDOM_SCORES


CURVE_POINTS = 500
"""Training-episode returns are averaged down to at most this many points per tag when saved."""
BAND_REPS = 2_000
"""Bootstrap resamples behind the plots' shaded 95% bands (the tables use statistics.BOOTSTRAP_REPS)."""
SMOOTHING = 25
"""Points in the moving average over the saved training-episode returns of the single-game plot."""
EVAL_SECONDS = re.compile(r"\(\d+ episodes, ([0-9.]+) s\)")
"""evaluate.py's line per matrix cell ends with `(16 episodes, 3.2 s)`."""


STATES = {
    NEW: "not started (or stopped before its first checkpoint)",
    INTERRUPTED: "training or interrupted (checkpoints short of the last game)",
    TRAINED: "trained, not evaluated yet",
}
"""An unfinished cell's line on the page, by sweep_plan's cell_state."""


class ResultsError(ValueError):
    """Nothing to report from the given folder, or a question the cells cannot answer."""


# ---- cells ----


@dataclass
class CellData:
    """One evaluated cell: what its eval.json, config.yaml, event files and log say."""

    cell: Cell
    evaluation: dict
    config: dict
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    timing: dict[str, float | None] = field(default_factory=dict)
    """train_start and train_end (first and last TensorBoard event, Unix seconds), eval_seconds."""

    @property
    def name(self) -> str:
        return self.cell.name

    @property
    def order(self) -> tuple[str, ...]:
        return self.cell.order

    @property
    def games(self) -> list[str]:
        return list(dict.fromkeys(self.order))

    def raw(self) -> np.ndarray:
        """R_raw[k-1, j]: mean raw score on games[j] after the first k games."""
        rows = {row["games_done"]: row for row in self.evaluation["rows"] if row.get("step_in_game", 0) == 0}
        return np.array(
            [[float(np.mean(rows[k]["cells"][game]["scores"])) for game in self.games] for k in range(1, len(self.order) + 1)]
        )


@dataclass(frozen=True)
class Incomplete:
    name: str
    why: str


def _missing_positions(evaluation: dict, order: tuple[str, ...]) -> str:
    """Why an eval.json cannot fill the cell's matrix ("" when it can)."""
    rows = {row["games_done"]: row for row in evaluation["rows"] if row.get("step_in_game", 0) == 0}
    for k in range(1, len(order) + 1):
        if k not in rows:
            return f"its evaluation has no game-end row after game {k}"
        missing = [game for game in order if not rows[k]["cells"].get(game, {}).get("scores")]
        if missing:
            return f"its evaluation after game {k} has no episodes of {', '.join(missing)}"
    return ""


def _cell_of(config: dict) -> Cell:
    method = config["consolidation"]["method"]
    strength = float(config["consolidation"]["ewc_lambda"]) if uses_lambda(method) else None
    return Cell(tuple(config["run"]["games"]), method, strength, int(config["run"]["seed"]))


file_name = paths.path_name


def load_cells(source: Path) -> tuple[list[CellData], list[Incomplete]]:
    """The whole cells of a sweep directory (<source>/cells/*/) or of a folder of saved cell JSON."""
    if (source / "cells").is_dir():
        return _load_sweep(source)
    saved = sorted(path for path in source.glob("*.json") if not path.name.endswith(".curves.json"))
    if not saved:
        raise ResultsError(f"{source} holds neither a sweep (cells/) nor saved cells (*.json)")
    cells = []
    for path in saved:
        data = json.loads(path.read_text())
        curves_file = path.with_name(path.name.removesuffix(".json") + ".curves.json")
        curves = json.loads(curves_file.read_text()) if curves_file.is_file() else {}
        cells.append(CellData(_cell_of(data["config"]), data, data["config"], curves, data.get("timing", {})))
    return _sorted(cells), []


def _load_sweep(sweep_dir: Path) -> tuple[list[CellData], list[Incomplete]]:
    cells, incomplete = [], []
    for run_dir in sorted(path for path in (sweep_dir / "cells").iterdir() if path.is_dir()):
        if not (run_dir / "config.yaml").is_file():
            incomplete.append(Incomplete(run_dir.name, "no config.yaml yet"))
            continue
        config = config_from_dict(load_yaml(run_dir / "config.yaml")).to_dict()
        cell = _cell_of(config)
        evaluation = read_evaluation(run_dir)
        why = STATES[cell_state(run_dir, cell.order)] if evaluation is None else _missing_positions(evaluation, cell.order)
        if why:
            incomplete.append(Incomplete(cell.name, why))
            continue
        curves, timing = read_events(run_dir)
        timing["eval_seconds"] = evaluation_seconds(log_path(sweep_dir, cell))
        cells.append(CellData(cell, evaluation, config, curves, timing))
    return _sorted(cells), incomplete


def _sorted(cells: list[CellData]) -> list[CellData]:
    return sorted(cells, key=lambda data: (data.order, data.cell.method, data.cell.ewc_lambda or 0.0, data.cell.seed))


def read_events(run_dir: Path) -> tuple[dict[str, list[list[float]]], dict[str, float | None]]:
    """The run's eval/ curves and training-episode returns (averaged down), and the first and last
    event's wall time; empty when the run has no event files."""
    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}, {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    curves, times = {}, []
    for tag in accumulator.Tags()["scalars"]:
        events = accumulator.Scalars(tag)
        times += [events[0].wall_time, events[-1].wall_time] if events else []
        if tag.startswith("eval/") or tag.endswith("/episodic_return"):
            by_step = {event.step: event.value for event in events}  # a resumed run's repeats: the last wins
            points = [[float(step), float(value)] for step, value in sorted(by_step.items())]
            curves[tag] = thin(points) if tag.endswith("/episodic_return") else points
    timing = {"train_start": min(times), "train_end": max(times)} if times else {}
    return curves, timing


def thin(points: list[list[float]], limit: int = CURVE_POINTS) -> list[list[float]]:
    """At most `limit` points: consecutive runs of episodes averaged (step: the run's last step).
    Averaging rather than picking every n-th keeps what the dropped episodes said."""
    if len(points) <= limit:
        return points
    return [
        [chunk[-1][0], float(np.mean([value for _, value in chunk]))]
        for chunk in (points[i * len(points) // limit : (i + 1) * len(points) // limit] for i in range(limit))
    ]


def evaluation_seconds(log: Path) -> float | None:
    """Seconds evaluate.py spent on the cell, from its per-matrix-cell lines in the sweep's log."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    seconds = [float(match) for match in EVAL_SECONDS.findall(text)]
    return sum(seconds) if seconds else None


def export_cells(cells: list[CellData], folder: Path) -> None:
    """Write every cell's compact results (eval.json + config + timing) and curves into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for data in cells:
        stem = folder / file_name(data.name)
        saved = {**data.evaluation, "config": data.config, "timing": data.timing}
        stem.with_name(stem.name + ".json").write_text(json.dumps(saved, indent=1) + "\n")
        if data.curves:
            stem.with_name(stem.name + ".curves.json").write_text(json.dumps(data.curves, separators=(",", ":")) + "\n")


def restore_cells(cells: list[CellData], sweep_dir: Path) -> int:
    """Write saved cells back as <sweep>/cells/<cell>/{config.yaml, eval/eval.json}: an evaluated cell to
    sweep.py (ewc_experiments/sweep_plan.py::cell_state), which then skips it. Existing cells are left alone."""
    restored = 0
    for data in cells:
        run_dir = cell_dir(sweep_dir, data.cell)
        if run_dir.exists():
            continue
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(data.config, sort_keys=False))
        (run_dir / "eval" / "eval.json").write_text(json.dumps(data.evaluation, indent=1) + "\n")
        restored += 1
    return restored


# ---- normalisation ----


@dataclass(frozen=True)
class Reference:
    random: float
    reference: float
    source: str
    seeds: int = 0
    """How many seeds a measured reference is the mean of (0: taken from a table)."""


def references(cells: list[CellData]) -> dict[str, Reference]:
    """Random and reference score of every game of the cells that has them (see the module docstring)."""
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
        elif short in MINATAR_RANDOM_SCORES:
            measured = measured_reference(cells, game)
            if measured is not None:
                reference, seeds, where = measured
                result[game] = Reference(MINATAR_RANDOM_SCORES[short], reference, where, seeds)
    return result


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
    """final_mean, retention, retention_fraction, forgetting, backward_transfer, last_game (R[K][g_K]).

    Final mean, forgetting and backward transfer are ewc_evaluation.metrics' (what evaluate.py and
    the sweep report print), computed from this cell's R."""
    R, order, column = normalised(data, refs), data.order, {game: j for j, game in enumerate(data.games)}
    K, g1 = len(order), column[order[0]]
    summary = metrics.summarise({k: dict(zip(data.games, row)) for k, row in enumerate(R.tolist(), start=1)}, order)
    before = R[0, g1]
    return {
        "final_mean": summary["final_mean_hns"],
        "retention": float(R[K - 1, g1]),
        "retention_fraction": float(R[K - 1, g1] / before) if before > 0 else math.nan,
        "forgetting": summary["mean_forgetting"],
        "backward_transfer": summary["backward_transfer"],
        "last_game": float(R[K - 1, column[order[-1]]]),
    }


# ---- groups and their statistics ----

GroupKey = tuple[tuple[str, ...], str, float | None]
"""(order, method, lambda): the cells of a group differ by their seed alone."""

METRICS = ("final_mean", "retention", "retention_fraction", "forgetting", "backward_transfer", "cost")


def group_label(key: GroupKey) -> str:
    _, method, strength = key
    return method if strength is None else f"{method} λ={strength:g}"


def group_file_name(key: GroupKey) -> str:
    """`ewc-lambda1000`, `finetune`: the group as cell names spell it."""
    _, method, strength = key
    return method if strength is None else f"{method}-lambda{strength:g}"


def order_text(order: Iterable[str]) -> str:
    return " → ".join(order)


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
    """METRICS -> (IQM, mean); `cost` is NaN for fine-tuning itself and where no fine-tuning ran."""
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
        figures["cost"] = math.nan if key[1] == "finetune" else figures["last_game"] - finetune_last
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
        dict(zip(METRICS, estimates[2 * size :])),
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
    strength: float
    final: list[float]
    """Normalised score of each game after the last game."""
    final_mean: float
    retention_fraction: float


def lambda_sweep(cells: list[CellData], refs: dict[str, Reference], method: str, main_order: tuple[str, ...]) -> list[LambdaRow]:
    """The seed-0 cells of `method` in the main order, one row per lambda (the lambda sweep)."""
    rows = []
    for data in cells:
        if data.cell.method == method and data.order == main_order and data.cell.seed == 0 and data.cell.ewc_lambda is not None:
            figures = cell_metrics(data, refs)
            rows.append(
                LambdaRow(
                    data.cell.ewc_lambda, list(normalised(data, refs)[-1]), figures["final_mean"], figures["retention_fraction"]
                )
            )
    return sorted(rows, key=lambda row: row.strength)


def choose_lambda(
    cells: list[CellData], refs: dict[str, Reference], method: str, main_order: tuple[str, ...] | None = None
) -> float:
    """The lambda whose seed-0 main-order cell of `method` has the highest final mean normalised score
    (the smallest such lambda on a tie)."""
    order = main_order_of(cells, main_order)
    swept = lambda_sweep(cells, refs, method, order)
    if not swept:
        raise ResultsError(f"no seed-0 {method} cell of the main order {order_text(order)} is evaluated yet")
    rows = [row for row in swept if not math.isnan(row.final_mean)]
    if not rows:
        raise ResultsError(
            f"the seed-0 {method} cells have no final normalised score: a game has no reference "
            "(fine-tuning cells that train it give one)"
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
                f"  # random: FINDINGS.md; reference: fine-tuning trained on it {how}{budget}, "
                f"mean of {_seeds(ref.seeds)}"
            )
    return "\n".join(lines)


# ---- plots ----


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


def _steps_per_game(data: CellData) -> int:
    return int(data.config["run"]["steps_per_game"])


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
            (line,) = axes.plot(steps, mean, marker=".", label=f"{group_label(key)} ({_seeds(len(values))})")
            axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
            drawn = True
        steps_per_game = _steps_per_game(next(iter(groups.values()))[0])
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
    axes.set_title(f"{group_label(summary.key)}, {order_text(order)} ({_seeds(summary.seeds)})", fontsize=9)
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
        budget = _steps_per_game(next(iter(first.values())))
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
            axes.plot(steps, mean, marker="o", color="tab:blue", label=f"evaluation, mean of {_seeds(len(values))}")
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


# ---- the page ----


def _text(estimate: Estimate, digits: int = 2) -> str:
    if math.isnan(estimate.value):
        return "n/a"
    if math.isnan(estimate.low):
        return f"{estimate.value:.{digits}f}"
    return f"{estimate.value:.{digits}f} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def _seeds(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds / 60:.1f}"


def _cell_seconds(data: CellData) -> float | None:
    timing = data.timing
    if timing.get("train_start") is None:
        return None
    return timing["train_end"] - timing["train_start"] + (timing.get("eval_seconds") or 0.0)


def settings_lines(cells: list[CellData]) -> list[str]:
    """The settings every cell shares, read from a cell's config; keys that differ are named."""
    config = cells[0].config
    run, env, net, agent, cons, ev = (config[s] for s in ("run", "env", "network", "agent", "consolidation", "eval"))
    decay = (
        f"{agent['epsilon_decay_steps']:,}"
        if agent["epsilon_decay_steps"]
        else f"{agent['epsilon_decay_fraction']:g} of the game's"
    )
    differing = sorted(
        {
            f"{section}.{key}"
            for data in cells
            for section, values in data.config.items()
            for key, value in values.items()
            if value != config[section][key]
        }
        - {"run.games", "run.seed", "consolidation.method", "consolidation.ewc_lambda"}
    )
    protocol = cells[0].evaluation.get("protocol", {})
    lines = [
        "| setting | value |",
        "|---|---|",
        f"| agent steps per game | {run['steps_per_game']:,} ({env['num_envs']} parallel environments) |",
        f"| replay ratio | one update of batch {agent['batch_size']} every {agent['steps_per_update']} agent steps "
        f"({agent['batch_size'] / agent['steps_per_update']:g} replayed transitions per agent step) |",
        f"| replay | {agent['replay_capacity']:,} transitions per game, learning starts after "
        f"{agent['learning_starts']:,} steps of each game |",
        f"| network | `{net['architecture']}`, per-game modulation {'on' if net['per_game_modulation'] else 'off'} |",
        f"| optimizer | {agent['optimizer']}, learning rate {agent['learning_rate']:g}, gradient norm clipped at "
        f"{agent['max_grad_norm']:g}; Double DQN, γ {agent['gamma']:g}, target network every "
        f"{agent['target_update_every']:,} updates |",
        f"| ε schedule (each game) | {agent['epsilon_start']:g} → {agent['epsilon_end']:g} over {decay} steps, "
        f"from step {agent['epsilon_decay_start']:,} of the game |",
        f"| sticky actions | {env['sticky_action_prob']:g} |",
        f"| difficulty ramping (MinAtar) | {'on' if env['difficulty_ramping'] else 'off'} |",
        f"| time limit | {env['max_episode_frames']:,} frames (agent steps on MinAtar) per training episode |",
        f"| consolidation | Fisher `{cons['fisher']}` from {cons['fisher_samples']:,} replay states at each game end; "
        f"online-EWC γ {cons['online_gamma']:g} |",
        f"| continual evaluation | every {ev['eval_every']:,} agent steps, {ev['episodes']} episodes of every game, "
        f"ε {ev['epsilon']:g}, cut at {ev['max_episode_frames']:,} frames |",
        f"| final evaluation (evaluate.py) | each game-end checkpoint on every game: {protocol.get('episodes', '?')} "
        f"episodes, ε {protocol.get('epsilon', '?')}, cut at {protocol.get('max_episode_frames', 0):,} frames, "
        f"seed {protocol.get('seed', '?')} |",
    ]
    if differing:
        lines += ["", f"Cells differ in {', '.join(differing)}; the values above are `{cells[0].name}`'s."]
    return lines


def _metric_header(order: tuple[str, ...]) -> tuple[list[str], list[str]]:
    first, last = order[0], order[-1]
    names = [
        "final mean",
        f"retention: {first} after game {len(order)}",
        f"retention as a fraction of {first} after game 1",
        "forgetting",
        "backward transfer",
        f"new-game cost: {last} vs fine-tuning",
    ]
    return names, ["|---"] * (len(names) + 2)


def summary_tables(order: tuple[str, ...], summaries: list[GroupSummary]) -> list[str]:
    names, rule = _metric_header(order)
    lines = []
    for statistic, index in (("IQM", 0), ("Mean", 1)):
        lines += [f"{statistic} [95% CI] over seeds:", "", "| method | seeds | " + " | ".join(names) + " |", "".join(rule) + "|"]
        for summary in summaries:
            values = [
                ("—" if name == "cost" and summary.key[1] == "finetune" else _text(summary.metrics[name][index]))
                for name in METRICS
            ]
            lines.append(f"| {group_label(summary.key)} | {summary.seeds} | " + " | ".join(values) + " |")
        lines.append("")
    return lines


def matrix_table(summary: GroupSummary) -> list[str]:
    lines = [
        "| after game | game | raw score, mean [95% CI] | normalised, IQM [95% CI] | normalised, mean [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for (k, game), (_, raw_mean) in summary.raw.items():
        iqm, mean = summary.norm[(k, game)]
        lines.append(f"| {k} ({summary.key[0][k - 1]}) | {game} | {_text(raw_mean, 1)} | {_text(iqm)} | {_text(mean)} |")
    return lines


def outcome_lines(summaries: dict[GroupKey, GroupSummary]) -> list[str]:
    """One factual sentence per order where EWC and fine-tuning both ran: their retention's IQM and CIs."""
    lines = []
    for order in dict.fromkeys(key[0] for key in summaries):
        pick = {key[1]: summary for key, summary in summaries.items() if key[0] == order}
        if "ewc" not in pick or "finetune" not in pick:
            continue
        ewc, finetune = pick["ewc"].metrics["retention"][0], pick["finetune"].metrics["retention"][0]
        if any(math.isnan(value) for value in (ewc.low, finetune.low)):
            verdict = "too few seeds for an interval"
        elif ewc.low > finetune.high:
            verdict = "the intervals do not overlap: EWC retains more"
        elif finetune.low > ewc.high:
            verdict = "the intervals do not overlap: fine-tuning retains more"
        else:
            verdict = "the intervals overlap"
        lines.append(
            f"- {order_text(order)}: normalised score on {order[0]} after the last game, IQM [95% CI]: "
            f"{group_label(pick['ewc'].key)} {_text(ewc)} ({_seeds(pick['ewc'].seeds)}), fine-tuning "
            f"{_text(finetune)} ({_seeds(pick['finetune'].seeds)}); {verdict}."
        )
    return lines or ["- No game order has both EWC and fine-tuning cells yet."]


@dataclass
class Page:
    markdown: str
    summaries: dict[GroupKey, GroupSummary]
    references: dict[str, Reference]
    chosen: dict[str, float]
    """Per method with a lambda sweep: the lambda with the highest final mean now."""


def build_page(
    cells: list[CellData],
    incomplete: list[Incomplete],
    assets: Path,
    page_dir: Path,
    main_order: tuple[str, ...] | None = None,
    command: str = "bash scripts/minatar_experiment.sh",
) -> Page:
    """The page's markdown; writes its plots into `assets` (links are relative to `page_dir`)."""
    if not cells:
        raise ResultsError("no evaluated cells to report" + (f" ({len(incomplete)} incomplete)" if incomplete else ""))
    refs, main = references(cells), main_order_of(cells, main_order)
    all_games = [game for data in cells for game in data.games]
    try:
        score_name = family_of_run(all_games).score_name
    except ValueError:
        score_name = "normalised score"
    short_name = score_name.split(" (")[0]
    groups = grouped(cells)
    headline = headline_groups(groups, refs)
    orders = sorted(dict.fromkeys(key[0] for key in groups), key=lambda order: order != main)
    assets.mkdir(parents=True, exist_ok=True)

    def link(path: Path) -> str:
        return path.relative_to(page_dir).as_posix() if path.is_relative_to(page_dir) else str(path)

    summaries = {
        key: summarise_group(key, group, refs, finetune_last_game(cells, refs, key[0])) for key, group in headline.items()
    }
    lines = [
        f"# Results: {order_text(main)}",
        "",
        f"Generated by `python -m ewc_experiments.results_page` from {len(cells)} evaluated cells"
        + (f" ({len(incomplete)} incomplete, listed at the end)" if incomplete else "")
        + ".",
        "The whole experiment is one command (it runs the sweeps, picks the lambdas, writes this page):",
        "",
        f"    {command}",
        "",
        "## Settings",
        "",
        *settings_lines(cells),
        "",
        "## Normalisation",
        "",
        f"Scores are the {score_name}: (score − random) / (reference − random).",
        "",
        "| game | random | reference | source | seeds |",
        "|---|---|---|---|---|",
    ]
    for game in dict.fromkeys(all_games):
        ref = refs.get(game)
        if ref is None:
            lines.append(f"| {game} | n/a | n/a | no reference yet: its normalised scores are n/a | 0 |")
            continue
        warning = " — **reference not above random: normalised scores are meaningless**" if ref.reference <= ref.random else ""
        lines.append(f"| {game} | {ref.random:g} | {ref.reference:.3f} | {ref.source}{warning} | {ref.seeds or '—'} |")
    lines += [
        "",
        "Random MinAtar returns: `MINATAR_RANDOM_SCORES` in envs/games.py (the shared FINDINGS.md).",
        "",
        "## Per method and order",
        "",
        "Each method's runs at its chosen lambda (the group with the most seeds). Statistics over seeds: IQM "
        "(interquartile mean; with fewer than 4 seeds it is the mean) and mean, with 95% stratified-bootstrap "
        f"confidence intervals (rliable, {stats.BOOTSTRAP_REPS:,} resamples). Retention: the normalised score on "
        "game 1 after the last game. Forgetting: best score since trained minus final (signed). Backward transfer: "
        "final minus right after training. New-game cost: the last game's final score minus fine-tuning's mean.",
        "",
    ]
    for order in orders:
        of_order = [summaries[key] for key in headline if key[0] == order]
        lines += [f"### {order_text(order)}" + (" (main order)" if order == main else ""), "", *summary_tables(order, of_order)]
        for summary in of_order:
            image = assets / f"matrix_{group_file_name(summary.key)}_{file_name('-'.join(order))}.png"
            plot_matrix(summary, image)
            lines += [
                f"#### {group_label(summary.key)}: score after each game ({_seeds(summary.seeds)})",
                "",
                *matrix_table(summary),
                "",
                f"![{group_label(summary.key)} matrix]({link(image)})",
                "",
            ]

    lines += [
        "## Continual evaluation",
        "",
        "Evaluation score of every game during training (`eval/<game>/score`), mean over seeds with a 95% "
        "bootstrap band; dotted lines mark the game boundaries.",
        "",
    ]
    for order in orders:
        image = assets / f"curves_{file_name('-'.join(order))}.png"
        of_order = {key: group for key, group in headline.items() if key[0] == order}
        if plot_curves(order, of_order, image):
            lines += [f"![continual evaluation, {order_text(order)}]({link(image)})", ""]
        else:
            lines += [f"- {order_text(order)}: no curves available (no TensorBoard event files or saved curves).", ""]
    image = assets / "single_game.png"
    drawn = plot_single_game(cells, refs, image)
    lines += ["### Single-game learning", ""]
    lines += (
        [f"![single-game learning curves]({link(image)})", ""]
        if drawn
        else ["No curves available (no fine-tuning cell with TensorBoard events or saved curves trains a game first).", ""]
    )

    lines += ["## Lambda sweeps", ""]
    chosen = {}
    for method in dict.fromkeys(data.cell.method for data in cells):
        rows = lambda_sweep(cells, refs, method, main)
        if len(rows) < 2:
            continue
        try:
            chosen[method] = choose_lambda(cells, refs, method, main)
        except ResultsError:
            pass
        games = list(dict.fromkeys(main))
        lines += [
            f"### {method} ({order_text(main)}, seed 0)",
            "",
            "| lambda | "
            + " | ".join(f"{game} after game {len(main)}" for game in games)
            + " | final mean | retention fraction of game 1 |",
            "|---" * (len(games) + 3) + "|",
        ]
        for row in rows:
            lines.append(
                f"| {row.strength:g} | "
                + " | ".join(_text(Estimate(v, math.nan, math.nan)) for v in row.final)
                + f" | {_text(Estimate(row.final_mean, math.nan, math.nan))} | "
                + f"{_text(Estimate(row.retention_fraction, math.nan, math.nan))} |"
            )
        most = next((key for key in headline if key[0] == main and key[1] == method), None)
        used = f"; the lambda run with the most seeds: {most[2]:g} ({_seeds(len(headline[most]))})" if most else ""
        best = f"{chosen[method]:g}" if method in chosen else "n/a"
        lines += ["", f"Highest final mean {short_name} with today's references: λ = {best}{used}.", ""]
    if not chosen:
        lines += ["No method has a lambda sweep (two or more lambdas at seed 0 in the main order) yet.", ""]

    lines += ["## Outcome", "", *outcome_lines(summaries), ""]

    total = [seconds for seconds in map(_cell_seconds, cells) if seconds is not None]
    starts = [data.timing["train_start"] for data in cells if data.timing.get("train_start") is not None]
    ends = [
        data.timing["train_end"] + (data.timing.get("eval_seconds") or 0.0)
        for data in cells
        if data.timing.get("train_end") is not None
    ]
    lines += [
        "## Cells",
        "",
        "Wall time: first to last TensorBoard event of the training (a resumed cell includes its pause), plus "
        "evaluate.py's time from the sweep's log. "
        + (
            f"Sum over cells {sum(total) / 3600:.2f} h; first start to last end {(max(ends) - min(starts)) / 3600:.2f} h "
            "(cells ran in parallel)."
            if total
            else "No wall times recorded."
        ),
        "",
        "| cell | final mean | training (min) | evaluation (min) |",
        "|---|---|---|---|",
    ]
    for data in cells:
        timing = data.timing
        training = None if timing.get("train_start") is None else timing["train_end"] - timing["train_start"]
        final = _text(Estimate(cell_metrics(data, refs)["final_mean"], math.nan, math.nan))
        lines.append(f"| `{data.name}` | {final} | {_minutes(training)} | {_minutes(timing.get('eval_seconds'))} |")
    if incomplete:
        lines += ["", "Incomplete cells (not in any table):", ""]
        lines += [f"- `{item.name}`: {item.why}" for item in incomplete]
    return Page("\n".join(lines) + "\n", summaries, refs, chosen)


def assets_folder(out: Path) -> Path:
    """docs/results/minatar.md -> docs/results/minatar/"""
    return out.with_suffix("")


def write_page(source: Path, out: Path, main_order: tuple[str, ...] | None = None, export_only: bool = False) -> Page | None:
    """Read the cells, save their compact results beside OUT, and (unless export_only) write the page."""
    cells, incomplete = load_cells(source)
    saved = assets_folder(out) / "cells"
    if source.resolve() != saved.resolve():
        export_cells(cells, saved)
    if export_only:
        return None
    page = build_page(cells, incomplete, assets_folder(out), out.parent, main_order)
    out.write_text(page.markdown)
    return page


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a sweep directory (with cells/) or a folder of saved cell JSON")
    parser.add_argument("--out", type=Path, help="the page to write, e.g. docs/results/minatar.md")
    parser.add_argument(
        "--choose-lambda",
        metavar="METHOD",
        help="print the lambda of METHOD's seed-0 main-order cells with the highest final mean score",
    )
    parser.add_argument(
        "--print-references", action="store_true", help="print the measured MinAtar references as lines for envs/games.py"
    )
    parser.add_argument("--main-order", help="comma list: the sweep's main game order (default: the order with most cells)")
    parser.add_argument("--export-only", action="store_true", help="only save the cells' JSON beside --out")
    parser.add_argument(
        "--restore-into",
        type=Path,
        metavar="SWEEP_DIR",
        help="write the saved cells of SOURCE back as evaluated cells of SWEEP_DIR, so a sweep skips them",
    )
    args = parser.parse_args(argv)
    if not (args.out or args.choose_lambda or args.print_references or args.restore_into):
        parser.error("give --out, --choose-lambda, --print-references or --restore-into")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        main_order = tuple(game_table.parse_games(args.main_order)) if args.main_order else None
        if args.choose_lambda or args.print_references:
            cells, _ = load_cells(args.source)
            refs = references(cells)
            if args.choose_lambda:
                print(f"{choose_lambda(cells, refs, args.choose_lambda, main_order):g}")
            if args.print_references:
                print(reference_lines(refs, _steps_per_game(cells[0]) if cells else None))
        if args.restore_into:
            cells, _ = load_cells(args.source)
            print(f"restored {restore_cells(cells, args.restore_into)} cells into {args.restore_into}", file=sys.stderr)
        if args.out:
            page = write_page(args.source, args.out, main_order, args.export_only)
            where = assets_folder(args.out)
            print(f"wrote {where / 'cells'}" if page is None else f"wrote {args.out} and {where}/", file=sys.stderr)
    except (ValueError, OSError) as error:  # ResultsError, StatisticsError, ConfigError, a bad --main-order
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
