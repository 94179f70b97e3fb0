"""A forgetting experiment on one page: a run of the first game, the runs branched from its end
(`train.py --branch-from`), what each kept of the first game while the next one trained.

    python -m ewc_experiments.branch_results export RUN_DIR ... --out docs/results/atari-pong-breakout.md
    python -m ewc_experiments.branch_results page --out docs/results/atari-pong-breakout.md --command "..."

`export` copies what the page needs out of each run directory, so the page can be rebuilt after the
runs are gone, into the folder named like OUT without `.md`:

    cells/<run>/run.json, config.yaml     provenance and the resolved config
    cells/<run>/eval.json                 evaluate.py's matrix, once the run is scored
    cells/<run>/scalars.csv               every TensorBoard scalar: tag, step, value, wall_time

`page` reads only those cells and writes OUT and curves.png beside it. The first game's gain kept,

    retention = (score after the last game - random) / (score after the first game - random)
              = HNS after the last game / HNS after the first game,

is 1 for a method that lost nothing of what the first game taught and 0 for one back at random play.
A page of one seed is an illustration: it says so, and it draws no interval.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from agents.ewc.methods import has_penalty
from envs.games import REFERENCE_SCORES, human_normalised_score
from ewc_experiments.cli import OneLineParser, fail
from ewc_experiments.results_cells import ResultsError, has_event_files, scalar_events

STOPPED_GAP = 1800.0
"""Seconds without a TensorBoard event that mean the run was stopped (a running one logs every few
minutes at most: losses every run.log_every steps, evaluations, episodes)."""
COLOURS = {
    "source": "black",
    "ewc": "tab:blue",
    "finetune": "tab:red",
    "l2": "tab:green",
    "online-ewc": "tab:purple",
    "replay": "tab:orange",
    "ewc+replay": "tab:cyan",
}


@dataclass
class BranchCell:
    """One run of the experiment as saved: the first-game run (no `branched_from`) or a branch."""

    name: str
    info: dict
    config: dict
    evaluation: dict | None
    scalars: dict[str, list[tuple[int, float, float]]]  # tag -> [(step, value, wall_time)]

    @property
    def method(self) -> str:
        return self.config["consolidation"]["method"]

    @property
    def games(self) -> list[str]:
        return self.config["run"]["games"]

    @property
    def is_branch(self) -> bool:
        return "branched_from" in self.info

    @property
    def label(self) -> str:
        if not self.is_branch:
            return f"{self.games[0]} alone"
        strength = f", λ {self.config['consolidation']['ewc_lambda']:g}" if has_penalty(self.method) else ""
        return f"{self.method}{strength}"

    def curve(self, game: str) -> list[tuple[int, float]]:
        return [(step, value) for step, value, _ in self.scalars.get(f"eval/{game}/score", [])]

    def last_step(self) -> int:
        return max((points[-1][0] for points in self.scalars.values() if points), default=0)

    def planned_steps(self) -> int:
        """Agent steps in all when the run is done (a branch's first games at its source's budget)."""
        steps = int(self.config["run"]["steps_per_game"])
        if not self.is_branch:
            return steps * len(self.games)
        source = self.info["branched_from"]
        return int(source["total_steps"]) + steps * (len(self.games) - len(source["games"]))

    def threads_text(self) -> str:
        """The torch thread count the run started with, and each resume's that changed it (run.json)."""
        text, count = str(self.info.get("torch_threads", "?")), self.info.get("torch_threads")
        for resume in self.info.get("resumed", []):
            if resume.get("torch_threads", count) != count:
                count = resume["torch_threads"]
                text += f", {count} from step {resume.get('total_steps', 0):,}"
        return text

    def wall_hours(self) -> float | None:
        """Hours the run trained: the gaps between its events, less any over STOPPED_GAP (a stop and
        the resume that followed it). Steps trained between the last checkpoint and a stop, trained
        again after the resume, count twice."""
        times = sorted(wall for points in self.scalars.values() for _, _, wall in points)
        if not times:
            return None
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        return sum(gap for gap in gaps if gap <= STOPPED_GAP) / 3600

    def game_end_scores(self) -> dict[int, dict[str, float]]:
        """Mean raw score per game after each game k, from evaluate.py's matrix (empty before scoring)."""
        rows = (self.evaluation or {}).get("rows", [])
        return {
            row["games_done"]: {game: cell["score_mean"] for game, cell in row["cells"].items() if cell.get("scores")}
            for row in rows
            if row.get("step_in_game", 0) == 0
        }


def cells_folder(out: Path) -> Path:
    return out.with_suffix("") / "cells"


def export(run_dirs: list[Path], out: Path) -> None:
    """Copy each run's provenance, config, evaluation and scalars into the page's cells folder."""
    for run_dir in run_dirs:
        if not (run_dir / "config.yaml").is_file() or not has_event_files(run_dir):
            raise ResultsError(f"{run_dir} is not a run directory with TensorBoard events")
        target = cells_folder(out) / run_dir.name
        shutil.rmtree(target, ignore_errors=True)  # a mirror of the run now: nothing left from an earlier export
        target.mkdir(parents=True)
        shutil.copyfile(run_dir / "run.json", target / "run.json")
        shutil.copyfile(run_dir / "config.yaml", target / "config.yaml")
        if (run_dir / "eval" / "eval.json").is_file():
            shutil.copyfile(run_dir / "eval" / "eval.json", target / "eval.json")
        with open(target / "scalars.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["tag", "step", "value", "wall_time"])
            for tag, points in sorted(scalar_events(run_dir).items()):
                writer.writerows([tag, step, f"{value:.6g}", f"{wall:.3f}"] for step, value, wall in points)


def load(out: Path) -> list[BranchCell]:
    folder = cells_folder(out)
    if not folder.is_dir():
        raise ResultsError(f"{folder} holds no saved runs; export them first")
    cells = []
    for cell_dir in sorted(path for path in folder.iterdir() if path.is_dir()):
        scalars: dict[str, list[tuple[int, float, float]]] = {}
        with open(cell_dir / "scalars.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                scalars.setdefault(row["tag"], []).append((int(row["step"]), float(row["value"]), float(row["wall_time"])))
        evaluation = cell_dir / "eval.json"
        cells.append(
            BranchCell(
                cell_dir.name,
                json.loads((cell_dir / "run.json").read_text()),
                yaml.safe_load((cell_dir / "config.yaml").read_text()),
                json.loads(evaluation.read_text()) if evaluation.is_file() else None,
                scalars,
            )
        )
    return cells


def split(cells: list[BranchCell]) -> tuple[BranchCell, list[BranchCell]]:
    sources = [cell for cell in cells if not cell.is_branch]
    if len(sources) != 1:
        raise ResultsError(f"expected one first-game run among the saved runs, found {len(sources)}")
    return sources[0], sorted((cell for cell in cells if cell.is_branch), key=lambda cell: cell.method)


def retention(first: float, last: float, game: str) -> float:
    """(last - random) / (first - random): the share of the first game's gain over random play kept;
    NaN when the first score was no gain (at or below random play): then there was nothing to keep."""
    gained = human_normalised_score(game, first)
    return human_normalised_score(game, last) / gained if gained > 0 else float("nan")


def plot(source: BranchCell, branches: list[BranchCell], path: Path) -> None:
    """One panel per game: its continual-evaluation score over agent steps, one line per run."""
    games = branches[0].games if branches else source.games
    figure = Figure(figsize=(5.2 * len(games), 3.6), layout="constrained")
    for index, game in enumerate(games):
        axes = figure.add_subplot(1, len(games), index + 1)
        for cell in [source, *branches]:
            points = cell.curve(game)
            if cell.is_branch and game == source.games[0] and source.curve(game):
                points = [source.curve(game)[-1], *points]  # each branch goes on from the source's last score
            if points:
                colour = COLOURS.get("source" if not cell.is_branch else cell.method, None)
                axes.plot(*zip(*points), marker=".", color=colour, label=cell.label)
        boundary = source.planned_steps()
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
        if game in REFERENCE_SCORES:
            axes.axhline(REFERENCE_SCORES[game][0], color="grey", linestyle=":", linewidth=0.8, label="random play")
        axes.set_title(f"{game}: evaluation score (ε {source.config['eval']['epsilon']})")
        axes.set_xlabel("agent steps (dashed: the game boundary)")
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def page_text(source: BranchCell, branches: list[BranchCell], command: str, figure: str) -> str:
    first, machine = source.games[0], source.info.get("machine", "unknown machine")
    lines = [
        f"# Forgetting on Atari: {' → '.join([first, *dict.fromkeys(g for b in branches for g in b.games[1:])])}",
        "",
        f"One {first} run, then branches at its end that train the next game from the same network "
        "(`train.py --branch-from`), one per method. **One seed: an illustration of what each method does, "
        "not a comparison with an interval.**",
        "",
        f"Made with `{command}` on {machine}, torch {source.info.get('torch', '?')}; started "
        f"{source.info.get('started', '?')[:10]}. Torch threads: "
        + "; ".join(f"{cell.name} {cell.threads_text()}" for cell in [source, *branches])
        + ".",
        "",
        f"![continual evaluation of every game of the sequence, every run]({figure})",
        "",
        "## Runs",
        "",
        f"| run | games | agent steps trained / planned | wall time | last evaluation of {first} | scored by evaluate.py |",
        "|---|---|---|---|---|---|",
    ]
    for cell in [source, *branches]:
        hours = cell.wall_hours()
        wall = "–" if hours is None else f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        scored = "yes" if cell.evaluation else "not yet" if cell.is_branch else "– (each branch scores its network)"
        curve = cell.curve(first)
        last = f"{curve[-1][1]:.1f} at {curve[-1][0]:,}" if curve else "–"
        lines.append(
            f"| {cell.name} ({cell.label}) | {' → '.join(cell.games)} | {cell.last_step():,} / {cell.planned_steps():,} "
            f"| {wall} | {last} | {scored} |"
        )
    lines += ["", *kept_table(first, branches), "", *curve_table(first, source, branches), ""]
    protocol = source.config["eval"]
    lines.append(
        f"Scores are raw game scores, evaluated with ε {protocol['epsilon']} over {protocol['episodes']} episodes "
        f"cut at {protocol['max_episode_frames']:,} frames; HNS = (score − random) / (human − random) with "
        "envs/games.py's references. Each run's command, commit and machine are in cells/<run>/run.json."
    )
    return "\n".join(lines) + "\n"


def kept_table(first: str, branches: list[BranchCell]) -> list[str]:
    """What each scored branch kept of the first game (evaluate.py's game-end matrix)."""
    scored = [cell for cell in branches if len(cell.game_end_scores()) == len(cell.games)]
    if not scored:
        return [f"## What each kept of {first}", "", "No branch is scored yet: the table waits for evaluate.py."]
    lines = [
        f"## What each kept of {first}",
        "",
        f"| method | {first} after game 1 | {first} after the last game | kept of {first}'s gain over random | "
        + " | ".join(f"{game} after the last game" for game in scored[0].games[1:])
        + " |",
        "|---|---|---|---|" + "---|" * (len(scored[0].games) - 1),
    ]
    for cell in scored:
        scores = cell.game_end_scores()
        before, after = scores[1][first], scores[len(cell.games)][first]
        others = " | ".join(
            f"{scores[len(cell.games)][game]:.1f} (HNS {human_normalised_score(game, scores[len(cell.games)][game]):.2f})"
            for game in cell.games[1:]
        )
        kept = retention(before, after, first)
        kept_text = f"{kept:.2f}" if kept == kept else f"n/a: {first} was not above random play after game 1"
        lines.append(
            f"| {cell.label} | {before:.1f} (HNS {human_normalised_score(first, before):.2f}) | {after:.1f} "
            f"(HNS {human_normalised_score(first, after):.2f}) | {kept_text} | {others} |"
        )
    return lines


def curve_table(first: str, source: BranchCell, branches: list[BranchCell]) -> list[str]:
    """The first game's continual-evaluation score at each evaluation after the boundary, per branch."""
    boundary = source.planned_steps()
    steps = sorted({step for cell in branches for step, _ in cell.curve(first) if step > boundary})
    if not steps:
        return []
    by_cell = {f"{cell.label} ({cell.name})": dict(cell.curve(first)) for cell in branches}
    before = source.curve(first)
    last_before = f"; the {first} run's last evaluation before it: {before[-1][1]:.1f} at {before[-1][0]:,}" if before else ""
    lines = [
        f"## {first} while the next game trains",
        "",
        f"Continual evaluation of {first}, by agent steps since the boundary{last_before}.",
        "",
        "| steps since the boundary | " + " | ".join(by_cell) + " |",
        "|---|" + "---|" * len(by_cell),
    ]
    for step in steps:
        values = " | ".join(f"{by_cell[label][step]:.1f}" if step in by_cell[label] else "–" for label in by_cell)
        lines.append(f"| {step - boundary:,} | {values} |")
    return lines + ["", *(line for cell in branches if (line := curve_summary(first, cell, boundary)))]


RANDOM_PLAY_MARGIN = 1.0
"""Points above random play within which an evaluation counts as "at random play" in the summary."""


def curve_summary(first: str, cell: BranchCell, boundary: int) -> str:
    """One line per branch: the mean of the first game's evaluations after the boundary, the share of its
    gain over random that mean keeps, and the first evaluation at random play (within RANDOM_PLAY_MARGIN)."""
    after = [(step, value) for step, value in cell.curve(first) if step > boundary]
    if not after:
        return ""
    mean = sum(value for _, value in after) / len(after)
    text = f"- {cell.label}: mean of these {len(after)} evaluations {mean:.1f}"
    scores = cell.game_end_scores()
    if 1 in scores and first in REFERENCE_SCORES:
        kept = retention(scores[1][first], mean, first)
        text += f" ({kept:.0%} of the gain over random play after game 1, on average)" if kept == kept else ""
    if first in REFERENCE_SCORES:
        random_play = REFERENCE_SCORES[first][0]
        at_random = [step for step, value in after if value <= random_play + RANDOM_PLAY_MARGIN]
        near = f"within {RANDOM_PLAY_MARGIN:g} point of random play ({random_play:g})"
        text += f"; first {near} {at_random[0] - boundary:,} steps after the boundary" if at_random else f"; never {near}"
    return text + "."


def write_page(out: Path, command: str) -> None:
    source, branches = split(load(out))
    figure = out.with_suffix("") / "curves.png"
    plot(source, branches, figure)
    out.write_text(page_text(source, branches, command, f"{figure.parent.name}/{figure.name}"))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["export", "page"])
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="with export: the runs to save")
    parser.add_argument("--out", type=Path, required=True, help="the page, e.g. docs/results/atari-pong-breakout.md")
    parser.add_argument("--command", default="", help="with page: the command that made the runs, printed on the page")
    args = parser.parse_args(argv)
    try:
        if args.action == "export":
            export(args.runs, args.out)
        else:
            write_page(args.out, args.command)
    except (ResultsError, OSError, KeyError, ValueError) as error:
        return fail(error)
    print(f"{args.action}: {args.out} ({time.strftime('%Y-%m-%d %H:%M')})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
