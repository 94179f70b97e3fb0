"""The results page's text: one markdown page of the settings, the normalisation, per method and game
order the summary tables and score matrices, the continual-evaluation plots, the lambda sweeps, a
factual outcome line per order and the list of cells. The numbers come from results_scores and the
figures from results_plots; this module only lays them out, so the page reads the same whether the
cells came from a sweep directory or from their saved JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from envs.families import family_of_run
from ewc_experiments import statistics as stats
from ewc_experiments.results_cells import RESUMED_WITHOUT_REPLAY, CellData, Incomplete, ResultsError, file_name
from ewc_experiments.results_lambda import lambda_lines
from ewc_experiments.results_plots import plot_curves, plot_matrix, plot_single_game
from ewc_experiments.results_scores import (
    SUMMARY_METRICS,
    GroupKey,
    GroupSummary,
    Reference,
    cell_metrics,
    finetune_last_game,
    frozen_final_mean,
    group_file_name,
    group_label,
    grouped,
    headline_groups,
    main_order_of,
    order_text,
    references,
    seeds_text,
    summarise_group,
)
from ewc_experiments.statistics import Estimate
from ewc_experiments.sweep_plan import method_name, split_method


def _text(estimate: Estimate, digits: int = 2) -> str:
    if math.isnan(estimate.value):
        return "n/a"
    if math.isnan(estimate.low):
        return f"{estimate.value:.{digits}f}"
    return f"{estimate.value:.{digits}f} [{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


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
        - {"run.games", "run.seed", "consolidation.method", "consolidation.ewc_lambda", "network.per_game_modulation"}
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
        f"| network | `{net['architecture']}`; per-game biases and gains only in the methods named `-modulated` |",
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


def _seed_list(seeds: set[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5": runs of consecutive seeds joined."""
    ordered, runs = sorted(seeds), []
    for seed in ordered:
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def provenance_lines(cells: list[CellData]) -> list[str]:
    """When, where and from which code the cells trained, as far as they recorded it."""
    starts = [data.timing["train_start"] for data in cells if data.timing.get("train_start")]
    ends = [data.timing["train_end"] for data in cells if data.timing.get("train_end")]
    lines = []
    if starts and ends:
        first, last = (
            datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M") for moment in (min(starts), max(ends))
        )
        lines.append(f"Trained from {first} to {last} UTC (the cells' first and last TensorBoard events).")
    recorded = [data.provenance for data in cells if data.provenance]
    if recorded:

        def values(key: str) -> str:
            return ", ".join(sorted({info[key][:7] if key == "git_commit" else info[key] for info in recorded if key in info}))

        lines.append(
            f"{len(recorded)} of {len(cells)} cells recorded where they ran: {values('machine') or values('device_name')}; "
            f"torch {values('torch')}; commits {values('git_commit')}"
            + ("." if len(recorded) == len(cells) else "; the others were saved before cells kept this.")
        )
    refilled = [
        f"{data.name} ({data.provenance[RESUMED_WITHOUT_REPLAY]})" for data in cells if RESUMED_WITHOUT_REPLAY in data.provenance
    ]
    if refilled:
        lines.append(
            "**Resumed mid-game without a saved replay** (the game refilled it and paused learning meanwhile; "
            f"their results are not an uninterrupted run's): {', '.join(refilled)}."
        )
    return lines


def seed_lines(cells: list[CellData], selection: list[CellData]) -> list[str]:
    """Which seeds served which purpose: single-game runs (the references), the sequences reported
    here, and the lambda selection (never reported). A seed in two of them is named as a warning."""
    purposes = {
        "single-game runs (normalisation references and learning curves)": {d.cell.seed for d in cells if len(d.games) == 1},
        (
            "sequences reported on this page (held out from every choice)"
            if selection
            else "sequences reported on this page (the lambda section below is chosen from these same cells)"
        ): {d.cell.seed for d in cells if len(d.games) > 1},
        "lambda selection (its sweeps below; never reported as a result)": {d.cell.seed for d in selection},
    }
    lines = ["| purpose | seeds |", "|---|---|"]
    lines += [f"| {purpose} | {_seed_list(seeds)} |" for purpose, seeds in purposes.items() if seeds]
    used = [seeds for seeds in purposes.values() if seeds]
    shared = set().union(*(a & b for i, a in enumerate(used) for b in used[i + 1 :])) if len(used) > 1 else set()
    if shared:
        lines += ["", f"**Seeds used for more than one purpose: {_seed_list(shared)}.**"]
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
        "forward transfer: learned after the earlier games vs alone",
    ]
    return names, ["|---"] * (len(names) + 2)


def summary_tables(order: tuple[str, ...], summaries: list[GroupSummary]) -> list[str]:
    names, rule = _metric_header(order)
    lines = []
    for statistic, index in (("IQM", 0), ("Mean", 1)):
        lines += [f"{statistic} [95% CI] over seeds:", "", "| method | seeds | " + " | ".join(names) + " |", "".join(rule) + "|"]
        for summary in summaries:
            values = [
                ("—" if name == "cost" and split_method(summary.key[1])[0] == "finetune" else _text(summary.metrics[name][index]))
                for name in SUMMARY_METRICS
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


PAIRED = (
    ("final_mean", "final mean"),
    ("total_clipped", "total clipped score"),
    ("retention", "first game after the last"),
    ("last_game", "last game"),
)
"""What the Outcome compares, the balance first (the final mean, then the sum over games of each
game's score clipped at 1, the EWC paper's measure): (cell_metrics key, words)."""


def outcome_lines(summaries: dict[GroupKey, GroupSummary], refs: dict[str, Reference]) -> list[str]:
    """Per order where fine-tuning ran: each other method (EWC first) minus fine-tuning, paired by seed,
    on the final mean first (the balance), then on the first game and the last; then that method minus
    a network frozen after game 1 (its own game-1 checkpoint), whose final scores need no training.
    Each `-modulated` method also meets its plain twin (what per-game biases and gains add) and
    fine-tuning with them (what the method adds beyond them), and EWC meets L2 (what weighting each
    parameter by its Fisher adds to pulling all of them back alike). Last, how far each game learned."""
    lines = []
    for order in dict.fromkeys(key[0] for key in summaries):
        pick = {key[1]: summary for key, summary in summaries.items() if key[0] == order}
        if "finetune" not in pick:
            continue
        paired = []
        for method in sorted((m for m in pick if m != "finetune"), key=lambda m: (m != "ewc", m)):
            paired += _paired_lines(order, pick[method], pick["finetune"], refs)
        for method in sorted(pick):  # what per-game biases and gains add to their method, and the method beyond them
            base, modulated = split_method(method)
            if modulated and base != "finetune":  # finetune-modulated met fine-tuning above
                for other in (base, method_name("finetune", modulated=True)):
                    if other in pick:
                        paired += _paired_lines(order, pick[method], pick[other], refs, frozen=False)
        if "ewc" in pick and "l2" in pick:  # what weighting by the Fisher adds to a uniform pull back to θ*
            paired += _paired_lines(order, pick["ewc"], pick["l2"], refs, frozen=False)
        if paired:  # an order with comparisons (a single game is its own reference, learned by construction)
            lines += paired + _learned_lines(order, pick["finetune"])
    return lines or ["- No game order has fine-tuning and another method's cells on the same seeds yet."]


LEARNED = 0.5
"""A game whose fine-tuned score right after its own training stays under this normalised score (half
of the single-game agent's) has not learned within its budget in that sequence: how well a method
keeps it says little, and the page says so."""


def _learned_lines(order: tuple[str, ...], finetune: GroupSummary) -> list[str]:
    """How far each game of `order` learned in the sequence: fine-tuning's normalised score on it right
    after its own training (mean over seeds), with every game under LEARNED named."""
    learned = {game: finetune.norm[(k, game)][1].value for k, game in enumerate(order, start=1) if (k, game) in finetune.norm}
    if not learned:
        return []
    line = (
        f"- {order_text(order)}: how far each game learned in this sequence, fine-tuning's normalised score on it "
        "right after training on it (mean over seeds): "
        + ", ".join(f"{game} {value:.2f}" for game, value in learned.items())
        + "."
    )
    unlearned = [game for game, value in learned.items() if not value >= LEARNED]
    if unlearned:
        its, it, games = ("its", "it", "a game") if len(unlearned) == 1 else ("their", "them", "games")
        line += (
            f" {', '.join(unlearned)} did not reach {LEARNED:.1f} of {its} single-game score within {its} budget in this "
            f"sequence, so comparisons on {it} (and the final mean, which includes {it}) weigh {games} that barely learned."
        )
    return [line]


def _paired_lines(
    order: tuple[str, ...], method: GroupSummary, other: GroupSummary, refs: dict[str, Reference], frozen: bool = True
) -> list[str]:
    """`method` minus `other` (fine-tuning, or another method it is weighed against), paired over
    their common seeds; with `frozen`, also `method` minus its own network frozen after game 1."""
    method_by_seed, other_by_seed = (
        {seed: cell_metrics(data, refs) for seed, data in _cells_by_seed(group).items()} for group in (method, other)
    )
    seeds = sorted(set(method_by_seed) & set(other_by_seed))
    if not seeds:
        return []
    label = group_label(method.key)
    other_label = "fine-tuning" if other.key[1] == "finetune" else group_label(other.key)
    comparisons = [(words, stats.paired_comparison(*_paired(method_by_seed, other_by_seed, seeds, key))) for key, words in PAIRED]
    balance = comparisons[0][1]
    lines = [
        f"- {order_text(order)}, {label} minus {other_label}, paired over {seeds_text(len(seeds))} "
        f"(mean difference of normalised scores [95% Student-t interval]): "
        + "; ".join(f"{words} {_signed(result.difference)}" for words, result in comparisons)
        + f". On the balance (final mean) {_verdict(balance.difference, label, other_label)}; "
        f"{label} is higher on {balance.wins} of {balance.seeds} seeds, "
        f"unpaired probability of improvement P({label} > {other_label}) = {balance.probability_of_improvement:.2f}."
    ]
    if frozen:
        frozen_means = {seed: frozen_final_mean(data, refs) for seed, data in _cells_by_seed(method).items()}
        versus_frozen = stats.paired_comparison(
            np.array([method_by_seed[seed]["final_mean"] for seed in seeds]), np.array([frozen_means[seed] for seed in seeds])
        )
        lines.append(
            f"- {order_text(order)}, {label} minus a network frozen after game 1, final mean: "
            f"{_signed(versus_frozen.difference)} ({_verdict(versus_frozen.difference, label, 'the frozen network')})."
        )
    return lines


def _cells_by_seed(summary: GroupSummary) -> dict[int, CellData]:
    return {data.cell.seed: data for data in summary.cells}


def _paired(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]], seeds: list[int], key: str) -> tuple:
    return np.array([a[seed][key] for seed in seeds]), np.array([b[seed][key] for seed in seeds])


def _signed(estimate: Estimate) -> str:
    if math.isnan(estimate.low):
        return f"{estimate.value:+.2f} (one seed: no interval)"
    return f"{estimate.value:+.2f} [{estimate.low:+.2f}, {estimate.high:+.2f}]"


def _verdict(difference: Estimate, name: str, other: str) -> str:
    """What the paired interval says, either way."""
    if math.isnan(difference.low):
        return "too few seeds to say"
    if difference.low > 0:
        return f"{name} beats {other}: the 95% interval lies above 0"
    if difference.high < 0:
        return f"{name} does worse than {other}: the 95% interval lies below 0"
    return f"{name} is not shown to beat {other}, nor to do worse: the 95% interval includes 0"


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
    selection: list[CellData] | None = None,
) -> Page:
    """The page's markdown; writes its plots into `assets` (links are relative to `page_dir`). The
    lambda sweeps come from `selection` (cells on seeds of their own) when given, else from `cells`."""
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
        *provenance_lines(cells),
        "",
        "## Settings",
        "",
        *settings_lines(cells),
        "",
        "## Seeds",
        "",
        *seed_lines(cells, selection or []),
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
        "Random MinAtar returns: `MINATAR_RANDOM_SCORES` in envs/games.py.",
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
                f"#### {group_label(summary.key)}: score after each game ({seeds_text(summary.seeds)})",
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

    swept = selection if selection else cells
    section, chosen = lambda_lines(swept, refs, headline, main, short_name, assets / "tradeoff.png", link)
    lines += section

    lines += ["## Outcome", "", *outcome_lines(summaries, refs), ""]

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
