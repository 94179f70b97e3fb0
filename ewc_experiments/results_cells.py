"""A sweep's evaluated cells, read into memory: from a sweep directory (<sweep>/cells/<cell>/) or from
the compact JSON saved beside the results page, so that the page can be rebuilt after the sweep
directory is gone; and the same cells written out again (export) or back into a sweep (restore).

    cells/<cell>.json          the cell's eval/eval.json, plus its config and wall times
    cells/<cell>.curves.json   its continual-evaluation curves {tag: [[step, value], ...]}: every eval/
                               tag, and charts/<game>/episodic_return averaged down to <= 500 points

File names are the cell's or order's name with `:` written `_` (`minatar:breakout` is a URL scheme
in a markdown link, and no file name on Windows).

A restored cell has no event files or sweep log to give its wall times and curves again: restore
writes the saved ones into the cell's directory as restored.json, and the next export keeps them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ewc_experiments.sweep_plan import (
    INTERRUPTED,
    NEW,
    TRAINED,
    Cell,
    cell_dir,
    cell_state,
    log_path,
    method_name,
    read_evaluation,
    uses_lambda,
)
from ewc_training import run_dir as paths
from ewc_training.config import config_from_dict, load_yaml

CURVE_POINTS = 500
"""Training-episode returns are averaged down to at most this many points per tag when saved."""
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


@dataclass
class CellData:
    """One evaluated cell: what its eval.json, config.yaml, event files and log say."""

    cell: Cell
    evaluation: dict
    config: dict
    curves: dict[str, list[list[float]]] = field(default_factory=dict)
    timing: dict[str, float | None] = field(default_factory=dict)
    """train_start and train_end (first and last TensorBoard event, Unix seconds), eval_seconds (from
    the sweep's log); a restored cell's come from its restored.json (restore_cells)."""
    provenance: dict[str, str] = field(default_factory=dict)
    """From the cell's run.json where it had one: git_commit, started, torch, device_name, machine, and
    resumed_without_replay where a resume refilled the replay mid-game (read_provenance)."""

    @property
    def name(self) -> str:
        return self.cell.name

    @property
    def order(self) -> tuple[str, ...]:
        return self.cell.order

    @property
    def games(self) -> list[str]:
        return list(dict.fromkeys(self.order))

    @property
    def steps_per_game(self) -> int:
        return int(self.config["run"]["steps_per_game"])

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
    method = method_name(config["consolidation"]["method"], bool(config["network"].get("per_game_modulation")))
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
        config = config_from_dict(data["config"]).to_dict()  # keys added since it was saved get their defaults
        cells.append(CellData(_cell_of(config), data, config, curves, data.get("timing", {}), data.get("provenance", {})))
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
        # a restored cell has no event files: it kept its saved curves and timing instead
        curves, timing = read_events(run_dir) if has_event_files(run_dir) else read_restored(run_dir)
        from_log = evaluation_seconds(log_path(sweep_dir, cell))
        timing["eval_seconds"] = from_log if from_log is not None else timing.get("eval_seconds")
        cells.append(CellData(cell, evaluation, config, curves, timing, read_provenance(run_dir)))
    return _sorted(cells), incomplete


def _sorted(cells: list[CellData]) -> list[CellData]:
    return sorted(cells, key=lambda data: (data.order, data.cell.method, data.cell.ewc_lambda or 0.0, data.cell.seed))


def has_event_files(run_dir: Path) -> bool:
    return any(run_dir.glob("events.out.tfevents.*"))


def scalar_events(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar event of the run's event files, per tag: [(step, value, wall_time)] in the order
    logged. Several may share a step (episodes that end at the same vector step); what a crashed run
    logged past the checkpoint it resumed from is already hidden (the resume's purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, float(event.value), event.wall_time) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def read_events(run_dir: Path) -> tuple[dict[str, list[list[float]]], dict[str, float | None]]:
    """The run's eval/ curves and training-episode returns (averaged down), and the first and last
    event's wall time; empty when the run has no event files."""
    if not has_event_files(run_dir):
        return {}, {}
    curves, times = {}, []
    for tag, events in scalar_events(run_dir).items():
        times += [events[0][2], events[-1][2]] if events else []
        if tag.startswith("eval/") or tag.endswith("/episodic_return"):
            by_step = {step: value for step, value, _ in events}  # one point per step: the last logged
            points = [[float(step), value] for step, value in sorted(by_step.items())]
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


RESUMED_WITHOUT_REPLAY = "resumed_without_replay"
"""Provenance key: the games (and steps) at which the cell resumed mid-game and refilled its replay."""
PROVENANCE_KEYS = ("git_commit", "started", "torch", "device_name", "machine", RESUMED_WITHOUT_REPLAY)


def read_provenance(run_dir: Path) -> dict[str, str]:
    """What the cell's run.json says of where and from which code it trained, and where a resume had to
    refill the replay mid-game (ewc_training/run_dir.py::replay_refills). A restored cell's run.json is
    this dict itself (restore_cells), so it reads back unchanged; {} when the cell has none."""
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    if refilled := paths.replay_refills(info):
        info[RESUMED_WITHOUT_REPLAY] = refilled
    return {key: str(info[key]) for key in PROVENANCE_KEYS if key in info}


def export_cells(cells: list[CellData], folder: Path) -> None:
    """Write every cell's compact results (eval.json + config + timing) and curves into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for data in cells:
        stem = folder / file_name(data.name)
        saved = {**data.evaluation, "config": data.config, "timing": data.timing, "provenance": data.provenance}
        stem.with_name(stem.name + ".json").write_text(json.dumps(saved, indent=1) + "\n")
        if data.curves:
            stem.with_name(stem.name + ".curves.json").write_text(json.dumps(data.curves, separators=(",", ":")) + "\n")


RESTORED = "restored.json"
"""In a restored cell's directory: the saved cell's curves and wall times, which it has no event files
or sweep log left to give, so that exporting the sweep again saves what was saved before."""


def read_restored(run_dir: Path) -> tuple[dict[str, list[list[float]]], dict[str, float | None]]:
    """The curves and timing restore_cells kept for a cell; empty where it kept none (or the file is not
    what restore_cells writes)."""
    try:
        kept = json.loads((run_dir / RESTORED).read_text())
    except (OSError, ValueError):
        return {}, {}
    curves, timing = (kept.get(key) if isinstance(kept, dict) else None for key in ("curves", "timing"))
    return (curves if isinstance(curves, dict) else {}), (timing if isinstance(timing, dict) else {})


def restore_cells(cells: list[CellData], sweep_dir: Path) -> int:
    """Write saved cells back as <sweep>/cells/<cell>/{config.yaml, eval/eval.json, restored.json}: an
    evaluated cell to sweep.py (ewc_experiments/sweep_plan.py::cell_state), which then skips it. Existing
    cells are left alone, but one without event files gets the saved curves and timing if it lacks them
    (restored before cells kept them)."""
    restored = 0
    for data in cells:
        run_dir = cell_dir(sweep_dir, data.cell)
        if run_dir.exists():
            if not has_event_files(run_dir) and not (run_dir / RESTORED).exists():
                _keep_saved_timing_and_curves(run_dir, data)
            continue
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(data.config, sort_keys=False))
        (run_dir / "eval" / "eval.json").write_text(json.dumps(data.evaluation, indent=1) + "\n")
        if data.provenance:  # kept for the next export
            (run_dir / "run.json").write_text(json.dumps(data.provenance, indent=2) + "\n")
        _keep_saved_timing_and_curves(run_dir, data)
        restored += 1
    return restored


def _keep_saved_timing_and_curves(run_dir: Path, data: CellData) -> None:
    (run_dir / RESTORED).write_text(json.dumps({"timing": data.timing, "curves": data.curves}) + "\n")
