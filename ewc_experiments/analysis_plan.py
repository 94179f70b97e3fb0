"""A confirmatory experiment's analysis plan: the sweeps it needs, and its verdicts from the saved cells.

    python -m ewc_experiments.analysis_plan PLAN --commands SWEEPS_ROOT     # the sweep.py commands, one a line
    python -m ewc_experiments.analysis_plan PLAN --export SWEEP_DIR...      # keep their evaluated cells beside the plan
    python -m ewc_experiments.analysis_plan PLAN --page OUT.md CELLS...     # the page, from saved cells

The plan (docs/results/minatar-confirmatory/plan.yaml) is written and committed before its cells
train. Each cell records the plan file's SHA-256 (`run.analysis_plan`, set by the commands printed
here), and the page refuses a cell of any other version, so a plan cannot be edited once it has
results. What the page computes, all of it fixed by the plan:

- references: each game's reference score is the mean final raw score of the plan's single-game
  fine-tuning cells (its reference seeds); normalised score = (score - random) / (reference - random);
- per cell the plan's metric (results_scores.cell_metrics, e.g. the final mean normalised score);
- per comparison A - B: per seed, the mean of the metric over the comparison's orders, then the paired
  t-test and 95% interval of the differences (statistics.paired_comparison);
- the primary comparison is tested alone at alpha; the secondary family with Holm's correction over
  all of its comparisons, a comparison without all its seeds counting as p = 1 (the family's size is
  the plan's, never the number of comparisons finished);
- a comparison prints no verdict before every planned seed is in;
- the reference sensitivity: the reference seeds resampled with replacement 2,000 times, and per
  comparison the share of draws whose verdict differs from the one printed.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from agents.ewc.methods import METHODS
from envs import games as game_table
from ewc_experiments.cli import OneLineParser, fail
from ewc_experiments.results_cells import RESUMED_WITHOUT_REPLAY, CellData, Incomplete, ResultsError, export_cells, load_cells
from ewc_experiments.results_scores import Reference, cell_metrics
from ewc_experiments.statistics import PairedComparison, holm, mean_t_interval, paired_comparison
from ewc_experiments.sweep_plan import split_method, uses_lambda
from ewc_training.config import Config, ConfigError, build_config
from ewc_training.errors import first_line

RESAMPLES = 2_000
"""Bootstrap draws of the reference seeds for the sensitivity of each verdict."""


def seed_range(text: str | int) -> list[int]:
    """`200-219` -> [200, ..., 219]; `7` -> [7]."""
    first, _, last = str(text).partition("-")
    return list(range(int(first), int(last or first) + 1))


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    orders: tuple[int, ...]
    """Indices into the plan's orders whose metric is averaged per seed."""

    def label(self, plan: AnalysisPlan) -> str:
        where = "both orders" if len(self.orders) == len(plan.orders) else " and ".join(plan.order_text(i) for i in self.orders)
        return f"{self.a} − {self.b} ({where})"


@dataclass
class AnalysisPlan:
    path: Path
    digest: str
    name: str
    config: str
    steps_per_game: int
    sets: list[str]
    alpha: float
    metric: str
    seeds: list[int]
    lambdas: dict[str, float]
    reference_seeds: list[int]
    reference_games: list[str]
    orders: list[tuple[str, ...]]
    primary: Comparison
    secondary: list[Comparison]
    five_game: dict = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)

    def order_text(self, index: int) -> str:
        return " → ".join(game.removeprefix(game_table.MINATAR_PREFIX) for game in self.orders[index])

    def methods(self) -> list[str]:
        """Every method of the two-game comparisons, in the order first named."""
        named = [self.primary.a, self.primary.b] + [m for c in self.secondary for m in (c.a, c.b)]
        return list(dict.fromkeys(named))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_plan(path: Path) -> AnalysisPlan:
    """The plan at `path`, checked as far as it can be before any cell exists (metric, methods, lambdas,
    seeds, games, the config and its settings): a mistake is a one-line ResultsError now, not a
    traceback once the cells carry the plan's digest."""
    try:
        raw = yaml.safe_load(path.read_text())
        orders = [tuple(order) for order in raw["orders"]]

        def comparison(entry: dict) -> Comparison:
            indices = tuple(entry.get("orders", range(len(orders))))
            if not all(0 <= i < len(orders) for i in indices):
                raise ValueError(f"comparison {entry['a']} - {entry['b']} names an order the plan does not list")
            return Comparison(entry["a"], entry["b"], indices)

        five_game = (raw.get("exploratory") or {}).get("five_game") or {}
        plan = AnalysisPlan(
            path=path,
            digest=file_digest(path),
            name=raw["name"],
            config=raw["config"],
            steps_per_game=int(raw["steps_per_game"]),
            sets=list(raw.get("sets", [])),
            alpha=float(raw["alpha"]),
            metric=raw["metric"],
            seeds=seed_range(raw["seeds"]),
            lambdas={method: float(value) for method, value in raw["lambdas"].items()},
            reference_seeds=seed_range(raw["references"]["seeds"]),
            reference_games=list(raw["references"]["games"]),
            orders=orders,
            primary=comparison(raw["primary"]),
            secondary=[comparison(entry) for entry in raw["secondary"]],
            five_game={
                "order": list(five_game["order"]),
                "methods": list(five_game["methods"]),
                "seeds": seed_range(five_game["seeds"]),
            }
            if five_game
            else {},
            rules=list(raw.get("rules", [])),
        )
        problems = plan_problems(plan)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ResultsError(f"{path}: not a usable analysis plan ({type(error).__name__}: {first_line(error)})") from None
    if problems:
        raise ResultsError(f"{path}: {problems[0]}")
    return plan


METRICS = ("final_mean", "total_clipped", "retention", "retention_fraction", "forgetting", "backward_transfer", "last_game")
"""results_scores.cell_metrics' names: what a plan's `metric` may be."""


def plan_problems(plan: AnalysisPlan) -> list[str]:
    """What makes a plan unusable, in words (empty when none)."""
    methods = plan.methods() + list(plan.five_game.get("methods", []))
    unknown = [m for m in methods if split_method(m)[0] not in METHODS]
    if unknown:
        return [f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}, each also as <method>-modulated"]
    games = plan.reference_games + [g for order in plan.orders for g in order] + list(plan.five_game.get("order", []))
    unscored = [g for g in games if g.removeprefix(game_table.MINATAR_PREFIX) not in game_table.MINATAR_RANDOM_SCORES]
    lambdaless = [m for m in methods if uses_lambda(m) and m not in plan.lambdas]
    checks = [
        (plan.metric in METRICS, f"metric {plan.metric!r} is none of {', '.join(METRICS)}"),
        (not unscored, f"{unscored[0] if unscored else ''} has no random score in envs.games.MINATAR_RANDOM_SCORES"),
        (not lambdaless, f"no lambda for {', '.join(lambdaless)} (plan key `lambdas`)"),
        (0 < plan.alpha < 1, "alpha must be in (0, 1)"),
        (len(plan.seeds) >= 2, "a paired comparison needs at least two seeds"),
    ]
    problems = [message for ok, message in checks if not ok]
    if not problems:
        try:
            plan_config(plan).validate()
        except (ConfigError, OSError) as error:
            problems.append(f"its config {plan.config} with its sets: {first_line(error)}")
    return problems


def plan_config(plan: AnalysisPlan) -> Config:
    """The config every cell of the plan shares, but for its games, method, lambda, seed and per-game parameters."""
    games = f"run.games=[{', '.join(plan.orders[0])}]"
    return build_config(plan.config, [games, f"run.steps_per_game={plan.steps_per_game}", *plan.sets])


# ---- the sweeps ----


def sweep_commands(plan: AnalysisPlan, root: Path) -> list[list[str]]:
    """sweep.py commands that train every planned cell, each cell marked with the plan's digest: one
    sweep per reference game, one per lambda of the two-game methods, the five-game sequence."""
    common = ["--config", plan.config, "--set", f"run.steps_per_game={plan.steps_per_game}"]
    common += [item for assignment in plan.sets for item in ("--set", assignment)]
    common += ["--set", f"run.analysis_plan={plan.digest}"]
    seeds = ",".join(map(str, plan.seeds))
    commands = [
        ["python", "sweep.py", "--games", game, "--methods", "finetune", "--seeds", ",".join(map(str, plan.reference_seeds)),
         *common, "--sweep-dir", str(root / f"reference-{game.removeprefix(game_table.MINATAR_PREFIX)}")]
        for game in plan.reference_games
    ]  # fmt: skip
    games, orders = ",".join(plan.orders[0]), ["--orders", "both"]
    commands += _by_lambda(plan, plan.methods(), ["--games", games, *orders, "--seeds", seeds, *common], root / "pairs")
    if plan.five_game:
        five = ["--games", ",".join(plan.five_game["order"]), "--seeds", ",".join(map(str, plan.five_game["seeds"]))]
        commands += _by_lambda(plan, plan.five_game["methods"], [*five, *common], root / "five-game")
    return commands


def _by_lambda(plan: AnalysisPlan, methods: list[str], flags: list[str], where: Path) -> list[list[str]]:
    """One sweep per lambda among `methods` (sweep.py gives every method of a sweep the same lambda)."""
    by_lambda: dict[float | None, list[str]] = {}
    for method in methods:
        by_lambda.setdefault(plan.lambdas.get(method) if uses_lambda(method) else None, []).append(method)
    commands = []
    for strength, group in by_lambda.items():
        name = f"{where.name}-" + ("no-lambda" if strength is None else f"lambda{strength:g}")
        strength_flags = [] if strength is None else ["--ewc-lambda", repr(strength)]  # exactly: cells are matched by it
        commands.append(
            ["python", "sweep.py", *flags, "--methods", ",".join(group), *strength_flags, "--sweep-dir", str(where.parent / name)]
        )
    return commands


# ---- the verdicts ----


SHARED_SECTIONS = ("env", "agent", "network")
"""Config sections every cell of a plan shares with the plan's config (network.per_game_modulation aside)."""


def check_cells(plan: AnalysisPlan, cells: list[CellData]) -> None:
    """Refuse a cell trained under another version of the plan (or none), with another budget or other
    env, agent or network settings than the plan's config, and a cell given twice."""
    shared = plan_config(plan).to_dict()
    seen: set[str] = set()
    for data in cells:
        recorded = data.config["run"].get("analysis_plan", "")
        if recorded != plan.digest:
            raise ResultsError(
                f"cell {data.name} was trained under plan {recorded[:12] or '(none)'}, not {plan.path}'s {plan.digest[:12]}: "
                "a plan is fixed before its cells; start a new plan file for a changed analysis"
            )
        if data.steps_per_game != plan.steps_per_game:
            raise ResultsError(
                f"cell {data.name} trained {data.steps_per_game:,} steps a game; the plan says {plan.steps_per_game:,}"
            )
        for section in SHARED_SECTIONS:
            for key, value in shared[section].items():
                if key != "per_game_modulation" and data.config[section].get(key) != value:
                    found = data.config[section].get(key)
                    raise ResultsError(f"cell {data.name} has {section}.{key}={found}; the plan's {plan.config} gives {value}")
        if data.name in seen:
            raise ResultsError(f"cell {data.name} is given twice; pass each folder of cells once")
        seen.add(data.name)


def reference_cells(plan: AnalysisPlan, cells: list[CellData], game: str | None = None) -> list[CellData]:
    """The plan's reference cells (single-game fine-tuning on its reference seeds), of `game` if given."""
    return [
        data
        for data in cells
        if data.cell.method == "finetune"
        and len(data.order) == 1
        and data.cell.seed in plan.reference_seeds
        and game in (None, data.order[0])
    ]


def method_cells(plan: AnalysisPlan, cells: list[CellData], method: str) -> list[CellData]:
    """`method`'s cells of the two-game comparisons: the plan's lambda for it, seeds and orders."""
    strength = plan.lambdas.get(method) if uses_lambda(method) else None
    return [
        data
        for data in cells
        if data.cell.method == method
        and data.cell.ewc_lambda == strength
        and data.cell.seed in plan.seeds
        and data.order in plan.orders
    ]


def reference_scores(plan: AnalysisPlan, cells: list[CellData]) -> dict[str, dict[int, float]]:
    """game -> {reference seed: final raw score} of the single-game fine-tuning cells."""
    scores: dict[str, dict[int, float]] = {}
    for data in reference_cells(plan, cells):
        scores.setdefault(data.order[0], {})[data.cell.seed] = float(data.raw()[0, 0])
    return scores


def references_from(scores: dict[str, dict[int, float]], seeds: list[int] | None = None) -> dict[str, Reference]:
    """Reference per game: mean over `seeds` (default: all its reference cells) of their scores."""
    result = {}
    for game, by_seed in scores.items():
        chosen = [by_seed[seed] for seed in (seeds if seeds is not None else by_seed) if seed in by_seed]
        random_score = game_table.MINATAR_RANDOM_SCORES[game.removeprefix(game_table.MINATAR_PREFIX)]
        result[game] = Reference(random_score, float(np.mean(chosen)), "the plan's reference cells", len(chosen))
    return result


@dataclass
class Outcome:
    comparison: Comparison
    seeds_in: int
    seeds_planned: int
    result: PairedComparison | None
    adjusted_p: float = math.nan

    @property
    def complete(self) -> bool:
        return self.result is not None and self.seeds_in == self.seeds_planned


_FINAL_ROWS: dict[int, tuple[CellData, dict[str, float]]] = {}
"""id(cell) -> (cell, its raw scores after the last game): the reference resampling asks for them thousands of times."""


def metric_of(data: CellData, refs: dict[str, Reference], metric: str) -> float:
    """The cell's `metric` under `refs`: results_scores.cell_metrics, with the final mean read straight
    from the cached last row, mean_g (score_g - random_g) / (reference_g - random_g), the same formula."""
    if metric != "final_mean":
        return cell_metrics(data, refs)[metric]
    if id(data) not in _FINAL_ROWS or _FINAL_ROWS[id(data)][0] is not data:
        _FINAL_ROWS[id(data)] = (data, dict(zip(data.games, data.raw()[-1])))
    final = _FINAL_ROWS[id(data)][1]
    values = [
        (final[g] - refs[g].random) / (refs[g].reference - refs[g].random)
        for g in final
        if g in refs and refs[g].reference > refs[g].random
    ]
    return float(np.mean(values)) if len(values) == len(final) else math.nan


def per_seed_values(plan: AnalysisPlan, cells: list[CellData], method: str, orders: tuple[int, ...], refs) -> dict[int, float]:
    """seed -> the plan's metric of `method`'s cells, averaged over `orders`; seeds missing an order are absent."""
    found: dict[int, dict[int, float]] = {}
    for data in method_cells(plan, cells, method):
        index = plan.orders.index(data.order)
        if index in orders:
            found.setdefault(data.cell.seed, {})[index] = metric_of(data, refs, plan.metric)
    return {seed: float(np.mean(list(values.values()))) for seed, values in found.items() if len(values) == len(orders)}


def outcome(plan: AnalysisPlan, cells: list[CellData], comparison: Comparison, refs) -> Outcome:
    a = per_seed_values(plan, cells, comparison.a, comparison.orders, refs)
    b = per_seed_values(plan, cells, comparison.b, comparison.orders, refs)
    seeds = [seed for seed in plan.seeds if seed in a and seed in b]
    result = paired_comparison(np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])) if len(seeds) >= 2 else None
    return Outcome(comparison, len(seeds), len(plan.seeds), result)


def outcomes(plan: AnalysisPlan, cells: list[CellData], refs) -> tuple[Outcome, list[Outcome]]:
    """The primary's outcome (its p unadjusted) and the secondary family's, Holm-adjusted with every
    unfinished comparison counted as p = 1."""
    primary = outcome(plan, cells, plan.primary, refs)
    primary.adjusted_p = primary.result.p_value if primary.complete else math.nan
    family = [outcome(plan, cells, comparison, refs) for comparison in plan.secondary]
    adjusted = holm({str(i): (o.result.p_value if o.complete else 1.0) for i, o in enumerate(family)})
    for i, entry in enumerate(family):
        entry.adjusted_p = adjusted[str(i)] if entry.complete else math.nan
    return primary, family


def verdict(entry: Outcome, alpha: float) -> str:
    """`A beats B`, `B beats A`, `not shown`, or `no verdict` while seeds are missing."""
    if not entry.complete:
        return "no verdict"
    if entry.adjusted_p < alpha:
        winner, loser = (entry.comparison.a, entry.comparison.b)
        if entry.result.difference.value < 0:
            winner, loser = loser, winner
        return f"{winner} beats {loser}"
    return "not shown"


def reference_sensitivity(plan: AnalysisPlan, cells: list[CellData], scores, printed: list[str], seed: int = 0) -> list[float]:
    """Per outcome (primary first, then the family), the share of reference-seed resamples whose verdict
    differs from the printed one; NaN for outcomes without a verdict."""
    rng = np.random.default_rng(seed)
    changed = np.zeros(len(printed))
    for _ in range(RESAMPLES):
        drawn = list(rng.choice(plan.reference_seeds, size=len(plan.reference_seeds), replace=True))
        primary, family = outcomes(plan, cells, references_from(scores, drawn))
        changed += [verdict(o, plan.alpha) != v for o, v in zip([primary, *family], printed)]
    return [float(c / RESAMPLES) if v != "no verdict" else math.nan for c, v in zip(changed, printed)]


def plateau_gains(plan: AnalysisPlan, cells: list[CellData]) -> dict[str, float]:
    """Per reference game: S(T) / S(0.8 T) - 1, with S the reference seeds' mean continual-evaluation
    score at the last evaluation at or before that step (NaN without curves)."""
    gains = {}
    for game in plan.reference_games:
        curves = [curve for data in reference_cells(plan, cells, game) if (curve := data.curves.get(f"eval/{game}/score"))]

        def score_at(step: float, curves=curves) -> float:
            return float(np.mean([max((p for p in curve if p[0] <= step), default=[0, math.nan])[1] for curve in curves]))

        end, before = (score_at(plan.steps_per_game), score_at(0.8 * plan.steps_per_game)) if curves else (math.nan, math.nan)
        gains[game] = end / before - 1 if before > 0 else math.nan
    return gains


# ---- the page ----


def planned_cells(plan: AnalysisPlan) -> dict[str, int]:
    """How many cells each part of the plan trains."""
    return {
        "references": len(plan.reference_games) * len(plan.reference_seeds),
        "two-game comparisons": len(plan.methods()) * len(plan.orders) * len(plan.seeds),
        "five-game sequence (exploratory)": len(plan.five_game.get("methods", [])) * len(plan.five_game.get("seeds", [])),
    }


def _number(value: float, digits: int = 3) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def outcome_row(plan: AnalysisPlan, entry: Outcome, printed: str, changes: float) -> str:
    """One comparison's line; its difference and p only once every planned seed is in (no peeking)."""
    result = entry.result if entry.complete else None
    difference = "—" if result is None else result.difference.text(3)
    shown = f"**{printed}**" if " beats " in printed else printed
    return (
        f"| {entry.comparison.label(plan)} | {entry.seeds_in} of {entry.seeds_planned} | {difference} | "
        f"{_number(result.p_value if result else math.nan)} | {_number(entry.adjusted_p)} | {shown} | {_number(changes, 2)} |"
    )


EXPLORATORY = {
    "retention": "first game after the second",
    "forgetting": "forgetting",
    "backward_transfer": "backward transfer",
    "forward_transfer": "forward transfer",
}
"""The exploratory metrics the page reports per method and order (never in bold, never tested)."""


def exploratory_values(data: CellData, refs: dict[str, Reference]) -> dict[str, float]:
    """results_scores.cell_metrics' retention, forgetting, backward and forward transfer."""
    found = cell_metrics(data, refs)
    return {name: found[name] for name in EXPLORATORY}


def exploratory_lines(plan: AnalysisPlan, cells: list[CellData], refs: dict[str, Reference]) -> list[str]:
    """Mean [95% t-interval] over seeds of each exploratory metric, per method and order; a method and
    order without all the planned seeds (or before every reference is in: `refs` empty) has no numbers yet."""
    lines = [
        "## Exploratory: what each method keeps and costs (no test, no correction)",
        "",
        "| method | order | seeds | " + " | ".join(EXPLORATORY.values()) + " |",
        "|---|---|---|" + "---|" * len(EXPLORATORY),
    ]
    for method in plan.methods():
        of_method = method_cells(plan, cells, method)
        for index, order in enumerate(plan.orders):
            group = [data for data in of_method if data.order == order]
            complete = bool(refs) and len({data.cell.seed for data in group}) == len(plan.seeds)
            values = [exploratory_values(data, refs) for data in group] if complete else []
            texts = [mean_t_interval(np.array([v[name] for v in values])).text(2) if values else "—" for name in EXPLORATORY]
            lines.append(
                f"| {method} | {plan.order_text(index)} | {len(group)} of {len(plan.seeds)} | " + " | ".join(texts) + " |"
            )
    return [*lines, ""]


def cell_lines(cells: list[CellData], incomplete: list[Incomplete]) -> list[str]:
    """The cells the rules ask the page to name: those not evaluated to the end (unfinished, stopped or
    diverged) and those that resumed mid-game without their replay."""
    lines = [f"- {entry.name}: not counted, {entry.why}" for entry in incomplete]
    lines += [
        f"- {data.name}: resumed without its replay ({data.provenance[RESUMED_WITHOUT_REPLAY]}); counted"
        for data in cells
        if data.provenance.get(RESUMED_WITHOUT_REPLAY)
    ]
    return ["", "Cells the plan's rules name:", "", *lines] if lines else []


def build_page(plan: AnalysisPlan, cells: list[CellData], relative_plan: str, incomplete: list[Incomplete] = ()) -> str:
    """The page's markdown: status, primary verdict first, the family, references and budget, the plan in words."""
    scores = reference_scores(plan, cells)
    refs = references_from(scores)
    missing_refs = [game for game in plan.reference_games if len(scores.get(game, {})) < len(plan.reference_seeds)]
    primary, family = outcomes(plan, cells, refs) if not missing_refs else (
        Outcome(plan.primary, 0, len(plan.seeds), None), [Outcome(c, 0, len(plan.seeds), None) for c in plan.secondary]
    )  # fmt: skip
    printed = [verdict(entry, plan.alpha) for entry in [primary, *family]]
    changes = reference_sensitivity(plan, cells, scores, printed) if not missing_refs and any(
        v != "no verdict" for v in printed
    ) else [math.nan] * len(printed)  # fmt: skip
    planned = planned_cells(plan)
    header = "| comparison | seeds | A − B, mean [95% CI] | p | adjusted p | verdict | verdict changes, references resampled |"
    rule = "|---|---|---|---|---|---|---|"
    lines = [
        f"# {plan.name}: EWC against fine-tuning, replay and the other baselines on MinAtar, confirmatory",
        "",
        f"The analysis plan is [{relative_plan}]({relative_plan}) (SHA-256 `{plan.digest[:16]}…`), fixed before any of its "
        "cells trained; every cell below was trained under exactly this file (the page refuses any other).",
        "",
        f"**Status:** {len(cells)} of {sum(planned.values())} planned cells evaluated ("
        + ", ".join(f"{name}: {count}" for name, count in planned.items())
        + "). No comparison has a verdict, difference or p before all its planned seeds are in.",
        *cell_lines(cells, list(incomplete)),
        "",
        f"## Primary comparison ({plan.metric.replace('_', ' ')}, paired by seed, two-sided t-test at α = {plan.alpha:g})",
        "",
        header,
        rule,
        outcome_row(plan, primary, printed[0], changes[0]),
        "",
        f"## Secondary comparisons (one family, Holm-corrected at α = {plan.alpha:g}; unfinished ones count as p = 1)",
        "",
        header,
        rule,
        *(outcome_row(plan, entry, text, change) for entry, text, change in zip(family, printed[1:], changes[1:])),
        "",
        *exploratory_lines(plan, cells, {} if missing_refs else refs),
        "## References and budget",
        "",
        f"Reference = fine-tuning trained on the game alone for {plan.steps_per_game:,} agent steps, final evaluation, mean over "
        f"the reference seeds {plan.reference_seeds[0]}-{plan.reference_seeds[-1]}; "
        "random from envs.games.MINATAR_RANDOM_SCORES. "
        "Last 20% gain = S(T) / S(0.8 T) − 1 of their continual-evaluation score: 5% or more means the budget cap binds.",
        "",
        "| game | reference seeds in | random | reference | last 20% gain | budget |",
        "|---|---|---|---|---|---|",
    ]
    gains = plateau_gains(plan, cells)
    for game in plan.reference_games:
        complete = game not in missing_refs  # a reference and its plateau only from all its seeds, as every figure here
        ref = refs.get(game) if complete else None
        gain = gains.get(game, math.nan) if complete else math.nan
        budget = "—" if math.isnan(gain) else ("plateau" if gain < 0.05 else "cap binds")
        random_score = game_table.MINATAR_RANDOM_SCORES[game.removeprefix(game_table.MINATAR_PREFIX)]
        lines.append(
            f"| {game} | {len(scores.get(game, {}))} of {len(plan.reference_seeds)} | {random_score:g} | "
            f"{_number(ref.reference if ref else math.nan)} | {_number(gain, 2)} | {budget} |"
        )
    lines += ["", "## The plan", "", *(f"- {rule_text}" for rule_text in plan.rules), "", "## Commands", "", "```"]
    lines += [" ".join(command) for command in sweep_commands(plan, Path("sweeps") / plan.name)]
    lines += ["```", ""]
    return "\n".join(lines)


def saved_cells_folder(plan: AnalysisPlan) -> Path:
    """Where the plan's evaluated cells are kept in the repository: beside the plan, cells/."""
    return plan.path.parent / "cells"


def read_cells(plan: AnalysisPlan, folders: list[Path]) -> tuple[list[CellData], list[Incomplete]]:
    """The evaluated cells (and the unfinished ones) of sweep directories or saved-cell folders, each
    checked against the plan."""
    cells, incomplete = [], []
    for folder in folders:
        found, unfinished = load_cells(folder)
        cells += found
        incomplete += unfinished
    check_cells(plan, cells)
    return cells, incomplete


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", type=Path, help="the plan's YAML file")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--commands", type=Path, metavar="SWEEPS_ROOT", help="print the sweep.py commands of every planned cell")
    action.add_argument("--export", action="store_true", help="save the evaluated cells of CELLS beside the plan (cells/)")
    action.add_argument("--page", type=Path, metavar="OUT", help="write the page from the saved cells in CELLS")
    parser.add_argument("cells", type=Path, nargs="*", help="folders of saved cells (or sweep directories) of this plan")
    args = parser.parse_intermixed_args(argv)  # PLAN CELLS... --page OUT and PLAN --page OUT CELLS... alike
    try:
        plan = load_plan(args.plan)
        if args.commands is not None:
            print("\n".join(" ".join(command) for command in sweep_commands(plan, args.commands)))
            return 0
        if args.export and not args.cells:
            raise ResultsError("--export needs the sweep directories (or saved-cell folders) to save the cells of")
        cells, incomplete = read_cells(plan, args.cells)
        if args.export:
            export_cells(cells, saved_cells_folder(plan))
            print(
                f"saved {len(cells)} evaluated cells in {saved_cells_folder(plan)} ({len(incomplete)} not finished)",
                file=sys.stderr,
            )
            return 0
        plan_link = os.path.relpath(plan.path.resolve(), args.page.resolve().parent)
        args.page.write_text(build_page(plan, cells, plan_link, incomplete))
    except (ValueError, OSError) as error:  # ResultsError, a config or JSON a cell folder holds that does not parse
        return fail(ResultsError(first_line(error)))
    print(f"wrote {args.page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
