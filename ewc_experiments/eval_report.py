"""What evaluate.py prints and writes: the matrix as markdown, JSON, CSV and a heatmap.

<run>/eval/eval.md      the printed report: the protocol, raw-score and normalised-score matrices, metrics, errors
<run>/eval/eval.json    everything, episode scores included (NaN written as null)
<run>/eval/eval.csv     one line per (checkpoint, game) cell
<run>/eval/matrix.png   mean normalised-score heatmap, rows "after game k", columns games

Labels name the normalisation in use: the human-normalised score (HNS) on Atari, the
MinAtar-normalised score on MinAtar; data keys (hns_mean, final_mean_hns) keep one name for both.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from agents.ewc.methods import has_penalty
from envs.families import MINATAR, family_of_run
from ewc_evaluation.config import EvalConfig
from ewc_experiments.eval_matrix import MatrixRow, Run, RunEvaluation, cell_hns, protocol_sources

OUTPUT_FOLDER = "eval"


def eval_folder(run_dir: Path) -> Path:
    return run_dir / OUTPUT_FOLDER


def write_outputs(evaluation: RunEvaluation) -> Path:
    """Write the four files into <run>/eval/ and return that folder."""
    folder = eval_folder(evaluation.run.path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.md").write_text(matrix_markdown(evaluation))
    (folder / "eval.json").write_text(json.dumps(_json_ready(as_dict(evaluation)), indent=2) + "\n")
    write_csv(evaluation, folder / "eval.csv")
    plot_matrix(evaluation, folder / "matrix.png")
    return folder


def score_name(evaluation: RunEvaluation) -> str:
    """Which normalisation the "HNS" columns hold: HNS on Atari, the MinAtar-normalised score on MinAtar."""
    return family_of_run(evaluation.run.sequence).score_name


def short_score_name(evaluation: RunEvaluation) -> str:
    """The normalisation's name without its explanation, for labels ("human-normalised score",
    "MinAtar-normalised score"): the "HNS" of the data keys is only Atari's."""
    return score_name(evaluation).split(" (")[0]


def protocol_settings(run: Run, protocol: EvalConfig) -> list[tuple[str, str]]:
    """How a run is scored: (setting, where it came from: "run config" or "flag") pairs."""
    env, sources = run.config.env, protocol_sources(run, protocol)
    minatar = family_of_run(run.sequence) is MINATAR
    unit = "agent steps" if minatar else "frames"  # MinAtar has no frame skip
    emulator = f"difficulty ramping {'on' if env.difficulty_ramping else 'off'}" if minatar else f"up to {env.noop_max} no-ops"
    return [
        (f"{protocol.episodes} episode{'s' if protocol.episodes > 1 else ''} per cell", sources["episodes"]),
        (f"epsilon {protocol.epsilon:g}", sources["epsilon"]),
        (f"episodes cut at {protocol.max_episode_frames:,} {unit}", sources["max_episode_frames"]),
        (f"sticky actions {env.sticky_action_prob:g}", "run config"),
        (emulator, "run config"),
    ]


def protocol_text(run: Run, protocol: EvalConfig, seed: int) -> str:
    """The protocol in one line, each setting with its source: what evaluate.py prints before
    scoring a run and eval.md opens with."""
    return ", ".join(f"{setting} ({source})" for setting, source in protocol_settings(run, protocol)) + f", seed {seed}"


def protocol_caveat(run: Run, protocol: EvalConfig) -> str:
    """A warning when the protocol cuts episodes shorter than the references' protocol did ("" otherwise):
    a cut episode ends early with the score it had, which for a losing Pong game is far above -21, so
    such normalised scores read like learning (the smoke preset's 2,000 frames do)."""
    family = family_of_run(run.sequence)
    limit = family.reference_episode_limit
    if protocol.max_episode_frames >= limit:
        return ""
    unit = "agent steps" if family is MINATAR else "frames"
    return (
        f"warning: episodes are cut at {protocol.max_episode_frames:,} {unit}, short of the {limit:,} the "
        f"reference scores were played with: the {family.score_name.split(' (')[0]}s here are not comparable "
        "with published ones or with runs scored in full (score again with --max-episode-frames "
        f"{limit})"
    )


def cell_stats(game: str, scores: list[float]) -> dict[str, float]:
    """Mean and (population) standard deviation over a cell's episodes, in raw score and HNS."""
    hns = cell_hns(game, scores)
    return {
        "score_mean": float(np.mean(scores)),
        "score_std": float(np.std(scores)),
        "hns_mean": float(np.mean(hns)),
        "hns_std": float(np.std(hns)),
    }


def as_dict(evaluation: RunEvaluation) -> dict[str, object]:
    config, protocol = evaluation.run.config, evaluation.protocol
    return {
        "run_dir": str(evaluation.run.path),
        "sequence": evaluation.run.sequence,
        "normalisation": score_name(evaluation),
        "games": evaluation.games,
        "method": config.consolidation.method,
        "ewc_lambda": config.consolidation.ewc_lambda,
        "run_seed": config.run.seed,
        "protocol": {
            "episodes": protocol.episodes,
            "epsilon": protocol.epsilon,
            "max_episode_frames": protocol.max_episode_frames,
            "noop_max": config.env.noop_max,
            "sticky_action_prob": config.env.sticky_action_prob,
            "difficulty_ramping": config.env.difficulty_ramping,
            "seed": evaluation.seed,
            "sources": protocol_sources(evaluation.run, protocol),
            "comparable_with_references": not protocol_caveat(evaluation.run, protocol),
        },
        "rows": [
            {
                "checkpoint": row.checkpoint,
                "label": row.label,
                "games_done": row.games_done,
                "step_in_game": row.step_in_game,
                "trained_game": row.trained_game,
                "cells": {game: {"scores": scores, **cell_stats(game, scores)} for game, scores in row.scores.items()},
            }
            for row in evaluation.rows
        ],
        "metrics": evaluation.metrics(),
        "errors": evaluation.errors,
    }


def _json_ready(value: object) -> object:
    """NaN becomes null (JSON has no NaN); dict keys become strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def write_csv(evaluation: RunEvaluation, path: Path) -> None:
    columns = [
        "run",
        "checkpoint",
        "games_done",
        "step_in_game",
        "trained_game",
        "game",
        "episodes",
        "score_mean",
        "score_std",
        "hns_mean",
        "hns_std",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in evaluation.rows:
            for game, scores in row.scores.items():
                writer.writerow(
                    {
                        "run": evaluation.run.path.name,
                        "checkpoint": row.checkpoint,
                        "games_done": row.games_done,
                        "step_in_game": row.step_in_game,
                        "trained_game": row.trained_game,
                        "game": game,
                        "episodes": len(scores),
                        **cell_stats(game, scores),
                    }
                )


def _number(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _table(evaluation: RunEvaluation, cell: Callable[[str, MatrixRow], str]) -> list[str]:
    lines = ["| checkpoint | " + " | ".join(evaluation.games) + " |", "|---" * (len(evaluation.games) + 1) + "|"]
    for row in evaluation.rows:
        lines.append(f"| {row.label} | " + " | ".join(cell(game, row) for game in evaluation.games) + " |")
    return lines


def _score_cell(game: str, row: MatrixRow) -> str:
    stats = cell_stats(game, row.scores[game])
    return f"{_number(stats['score_mean'], 1)} ± {_number(stats['score_std'], 1)}"


def _hns_cell(game: str, row: MatrixRow) -> str:
    stats = cell_stats(game, row.scores[game])
    return f"{_number(stats['hns_mean'], 3)} ± {_number(stats['hns_std'], 3)}"


def matrix_markdown(evaluation: RunEvaluation) -> str:
    """The report evaluate.py prints and saves as eval.md."""
    lines = [
        f"# Evaluation of {evaluation.run.path}",
        "",
        f"Sequence: {' -> '.join(evaluation.run.sequence)}.",
        "",
        f"Protocol: {protocol_text(evaluation.run, evaluation.protocol, evaluation.seed)}.",
        "",
        *([f"**{caveat}**", ""] if (caveat := protocol_caveat(evaluation.run, evaluation.protocol)) else []),
        "## Raw score (mean ± std over episodes)",
        "",
        *_table(evaluation, _score_cell),
        "",
        f"## {score_name(evaluation)[0].upper() + score_name(evaluation)[1:]} (mean ± std over episodes)",
        "",
        *_table(evaluation, _hns_cell),
        "",
        *_metric_lines(evaluation.metrics(), score_name(evaluation), short_score_name(evaluation)),
    ]
    if evaluation.errors:
        lines += ["", "## Checkpoints not evaluated", "", *(f"- {error}" for error in evaluation.errors)]
    return "\n".join(lines) + "\n"


def _metric_lines(metrics: dict[str, object], normalisation: str, name: str) -> list[str]:
    if not metrics:
        return ["No game-end checkpoint was evaluated, so there are no continual-learning metrics."]
    forgetting = ", ".join(f"{game} {_number(value, 3)}" for game, value in metrics["forgetting"].items())
    between = ", ".join(f"{game} {_number(value, 3)}" for game, value in metrics["between_visit_forgetting"].items())
    after_each = ", ".join(f"{k}: {_number(value, 3)}" for k, value in metrics["mean_hns_after_game"].items())
    total_clipped = ", ".join(f"{k}: {_number(value, 3)}" for k, value in metrics["total_clipped_hns_after_game"].items())
    learned = ", ".join(f"{game} {_number(value, 3)}" for game, value in metrics["learned_when_trained"].items())
    if "forward_transfer" in metrics:
        per_game = ", ".join(f"{game} {_number(value, 3)}" for game, value in metrics["forward_transfer"].items())
        transfer = f"{_number(metrics['mean_forward_transfer'], 3)}" + (f" ({per_game})" if per_game else "")
    else:
        transfer = "n/a: no single-game reference at this budget"
    return [
        f"## Metrics ({normalisation}; final = after game {metrics['final_after_game']}; definitions in docs/evaluation.md)",
        "",
        f"- final mean {name}: {_number(metrics['final_mean_hns'], 3)}",
        f"- final total clipped {name} (each game clipped at 1, Kirkpatrick et al. Fig. 4): "
        f"{_number(metrics['final_total_clipped_hns'], 3)}",
        f"- mean forgetting (signed, Chaudhry et al.): {_number(metrics['mean_forgetting'], 3)}"
        + (f" ({forgetting})" if forgetting else ""),
        f"- mean clipped forgetting (never negative): {_number(metrics['mean_clipped_forgetting'], 3)}",
        f"- backward transfer: {_number(metrics['backward_transfer'], 3)}",
        f"- mean forgetting between visits (largest loss from a visit's end to the game's next visit or the end): "
        f"{_number(metrics['mean_between_visit_forgetting'], 3)}" + (f" ({between})" if between else ""),
        f"- mean {name} after each game: {after_each}",
        f"- total clipped {name} after each game: {total_clipped}",
        f"- {name} right after each game's first training: {learned}",
        f"- mean forward transfer (that minus the game trained alone at the same budget): {transfer}",
    ]


COMPARED_METRICS = ("final_mean_hns", "final_total_clipped_hns", "mean_forgetting", "backward_transfer")


def comparison_markdown(evaluations: list[RunEvaluation]) -> str:
    """One line per run: what it did and how it ended, so EWC vs fine-tuning is one table."""
    names = sorted({short_score_name(evaluation) for evaluation in evaluations})
    name = names[0] if len(names) == 1 else "normalised score"
    lines = [
        f"| run | method | lambda | seed | final mean {name} | final total clipped {name} "
        "| mean forgetting | backward transfer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for evaluation in evaluations:
        config, metrics = evaluation.run.config, evaluation.metrics()
        strength = "-" if not has_penalty(config.consolidation.method) else f"{config.consolidation.ewc_lambda:g}"
        values = [_number(metrics.get(name, math.nan), 3) for name in COMPARED_METRICS]
        lines.append(
            f"| {evaluation.run.path.name} | {config.consolidation.method} | {strength} | {config.run.seed} | "
            + " | ".join(values)
            + " |"
        )
    protocols = {tuple(setting for setting, _ in protocol_settings(each.run, each.protocol)) for each in evaluations}
    if len(protocols) > 1:
        lines += ["", "The runs were scored with different protocols (each its own; see each eval.md): not like for like."]
    return "\n".join(lines) + "\n"


INCH_PER_CHARACTER = 0.09
"""About the width of one character of 10-point text: how much room the labels need."""


def matrix_figure_size(evaluation: RunEvaluation) -> tuple[float, float]:
    """Inches that hold the matrix and its labels: row labels on the left, game names (at 45
    degrees) below, the colour bar on the right."""
    row_labels = max((len(row.label) for row in evaluation.rows), default=0) * INCH_PER_CHARACTER
    game_labels = max(len(game) for game in evaluation.games) * INCH_PER_CHARACTER * 0.7
    width = row_labels + 0.9 * len(evaluation.games) + 2.0
    height = game_labels + 0.5 * len(evaluation.rows) + 2.0
    return max(6.0, width), max(4.0, height)


def plot_matrix(evaluation: RunEvaluation, path: Path) -> None:
    """Write matrix.png."""
    matrix_figure(evaluation).savefig(path, dpi=120)


def matrix_figure(evaluation: RunEvaluation) -> Figure:
    """Heatmap of mean HNS: rows are checkpoints, columns games; NaN cells are left blank.

    Text must fit inside the image: the figure is sized for its labels, the layout is constrained,
    and the title (over the whole figure) and the colour bar's label are wrapped to the room they have.
    """
    hns = np.array(
        [[cell_stats(game, row.scores[game])["hns_mean"] for game in evaluation.games] for row in evaluation.rows]
    ).reshape(len(evaluation.rows), len(evaluation.games))
    width, height = matrix_figure_size(evaluation)
    name = short_score_name(evaluation)
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(hns), cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axes, label=textwrap.fill(name, int((height - 1.5) / INCH_PER_CHARACTER)))
    axes.set_xticks(range(len(evaluation.games)), evaluation.games, rotation=45, ha="right")
    axes.set_yticks(range(len(evaluation.rows)), [row.label for row in evaluation.rows])
    middle = (image.norm.vmin + image.norm.vmax) / 2 if np.isfinite(hns).any() else 0.0
    for (i, j), value in np.ndenumerate(hns):
        if not math.isnan(value):
            colour = "white" if value < middle else "black"  # readable on viridis's dark and light ends
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    characters = int(width / INCH_PER_CHARACTER / 1.2)  # the title is 12-point
    title = [evaluation.run.path.name, f"{name} after each checkpoint"]
    figure.suptitle("\n".join(textwrap.fill(line, characters) for line in title))
    return figure
