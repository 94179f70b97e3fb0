"""The confirmatory plan: its committed file, the sweeps it prints, and the verdict rules its page applies.

The verdict tests feed the page code cells with chosen final scores (the loading of real saved cells
is results_cells.py's, tested with real sweeps in test_sweep.py), so each rule is checked on numbers
whose right answer is known."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from ewc_experiments import analysis_plan
from ewc_experiments.analysis_plan import (
    check_cells,
    load_plan,
    main,
    outcomes,
    reference_scores,
    references_from,
    sweep_commands,
    verdict,
)
from ewc_experiments.results_cells import CellData, ResultsError, _cell_of, export_cells, load_cells
from ewc_experiments.sweep_plan import parse_methods
from ewc_training.config import Config
from tests.conftest import ROOT

PLAN = ROOT / "docs" / "results" / "minatar-confirmatory" / "plan.yaml"
BREAKOUT, INVADERS = "minatar:breakout", "minatar:space_invaders"


def test_every_committed_cell_of_the_plan_was_trained_under_the_committed_plan():
    """The guard: editing plan.yaml after its cells exist makes this fail (their recorded digest differs)."""
    plan = load_plan(PLAN)
    folder = PLAN.parent / "cells"
    cells = load_cells(folder)[0] if folder.is_dir() and any(folder.glob("*.json")) else []
    check_cells(plan, cells)
    assert len(plan.seeds) >= 20 and not set(plan.seeds) & {*range(10), 100, 101, *range(1000, 1005)}


def test_the_printed_sweeps_cover_every_planned_method_and_mark_each_cell_with_the_plan():
    plan = load_plan(PLAN)
    commands = sweep_commands(plan, ROOT / "sweeps")
    methods = {m for command in commands for m in parse_methods(command[command.index("--methods") + 1])}
    assert set(plan.methods()) | set(plan.five_game["methods"]) <= methods
    assert all(f"run.analysis_plan={plan.digest}" in command for command in commands)
    assert all("run.steps_per_game=300000" in command for command in commands)


def fake_cell(order, method, seed, finals, digest, steps=300_000, strength=1000.0):
    """A cell whose evaluation gives raw score finals[game] after every game (only the last row matters)."""
    config = Config().to_dict()
    base, modulated = method.removesuffix("-modulated"), method.endswith("-modulated")
    config["run"].update(games=list(order), seed=seed, steps_per_game=steps, analysis_plan=digest)
    config["consolidation"].update(method=base, ewc_lambda=strength)
    config["network"]["per_game_modulation"] = modulated
    rows = [{"games_done": k, "cells": {g: {"scores": [finals[g]]} for g in order}} for k in range(1, len(order) + 1)]
    return CellData(_cell_of(config), {"rows": rows}, config)


def planned_cells(plan, ewc_gain: float, seeds=None, noise=0.01):
    """References at 10.0 (random 0.51 for breakout, 2.95 for space_invaders), and every two-game cell of
    the plan: fine-tuning ends at 3.0 on each game, EWC `ewc_gain` above it, the rest as fine-tuning."""
    rng = np.random.default_rng(0)
    cells = [
        fake_cell((game,), "finetune", seed, {game: 10.0}, plan.digest)
        for game in plan.reference_games
        for seed in plan.reference_seeds
    ]
    for seed in seeds if seeds is not None else plan.seeds:
        for order in plan.orders:
            for method in plan.methods():
                gain = ewc_gain if method == "ewc" else 0.0
                finals = {g: 3.0 + gain + noise * rng.standard_normal() for g in order}
                cells.append(fake_cell(order, method, seed, finals, plan.digest, strength=plan.lambdas.get(method, 1000.0)))
    return cells


def test_a_clear_difference_over_every_planned_seed_is_a_verdict_and_one_seed_short_is_none():
    plan = load_plan(PLAN)
    cells = planned_cells(plan, ewc_gain=1.0)
    refs = references_from(reference_scores(plan, cells))
    assert refs[BREAKOUT].reference == 10.0 and refs[BREAKOUT].seeds == 10
    primary, family = outcomes(plan, cells, refs)
    assert verdict(primary, plan.alpha) == "ewc beats finetune" and primary.seeds_in == 20
    assert primary.result.difference.value == pytest.approx(np.mean([1.0 / (10 - 0.51), 1.0 / (10 - 2.95)]), rel=0.05)
    assert verdict(family[-2], plan.alpha) == "ewc beats replay"  # `replay - ewc`: the winner is named
    assert verdict(family[2], plan.alpha) == "not shown"  # l2 equals fine-tuning here

    short = planned_cells(plan, ewc_gain=1.0, seeds=plan.seeds[:-1])
    primary, _ = outcomes(plan, short, refs)
    assert primary.seeds_in == 19 and verdict(primary, plan.alpha) == "no verdict"


def test_the_family_is_corrected_for_its_planned_size_even_when_only_one_comparison_is_finished():
    """Only the order-0 comparison complete, with t = 2.5 on 19 degrees of freedom (p = 0.022): Holm over
    the plan's 8 comparisons multiplies it by 8, so it is not shown, where alone it would be."""
    plan = load_plan(PLAN)
    refs = references_from(reference_scores(plan, planned_cells(plan, 0.0)))
    mean_gain = 2.5 * math.sqrt(20 / 19) / math.sqrt(20)  # differences mean ± 1: sd = sqrt(20/19)
    cells = []
    for index, seed in enumerate(plan.seeds):
        for method in ("ewc", "finetune"):
            gain = mean_gain + (-1) ** index if method == "ewc" else 0.0
            cells.append(fake_cell(plan.orders[0], method, seed, dict.fromkeys(plan.orders[0], 3.0 + gain), plan.digest))
    _, family = outcomes(plan, cells, refs)
    first = family[0]
    assert first.complete and not any(entry.complete for entry in family[1:])
    assert first.adjusted_p == pytest.approx(min(1.0, 8 * first.result.p_value))
    assert first.result.p_value < 0.05 <= first.adjusted_p, first.result.p_value


def test_a_cell_of_another_plan_or_budget_is_refused(tmp_path):
    plan = load_plan(PLAN)
    with pytest.raises(ResultsError, match="trained under plan 000000000000, not"):
        check_cells(plan, [fake_cell(plan.orders[0], "ewc", 200, dict.fromkeys(plan.orders[0], 1.0), "0" * 64)])
    with pytest.raises(ResultsError, match="trained 150,000 steps a game"):
        check_cells(plan, [fake_cell(plan.orders[0], "ewc", 200, dict.fromkeys(plan.orders[0], 1.0), plan.digest, 150_000)])
    edited = tmp_path / "plan.yaml"
    shutil.copy(PLAN, edited)
    edited.write_text(edited.read_text().replace("alpha: 0.05", "alpha: 0.1"))
    assert load_plan(edited).digest != plan.digest  # any edit is another plan


def test_the_page_of_a_plan_without_cells_says_no_verdict_everywhere(tmp_path):
    out = tmp_path / "page.md"
    assert main([str(PLAN), "--page", str(out)]) == 0
    text = out.read_text()
    assert "0 of 410 planned cells" in text and text.count("| no verdict |") == 9 and "**" not in text.split("## Primary")[1]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  l2: 0.0001\n", "", "no lambda for l2 (plan key `lambdas`)"),
        ("metric: final_mean", "metric: final_men", "metric 'final_men' is none of final_mean, total_clipped"),
        ("{a: l2, b: finetune}", "{a: l2, b: fine-tune}", "unknown method 'fine-tune'"),
        ("    seeds: 200-209", "    seeds: 200,201", "not a usable analysis plan (ValueError: invalid literal"),
        ("  - run.save_replay=true", "  - run.save_replays=true", "its config configs/minatar.yaml with its sets:"),
        ("alpha: 0.05", "alpha: [0.05", "not a usable analysis plan (ParserError:"),
    ],
)
def test_a_plan_mistake_is_one_line_before_any_cell_carries_it(tmp_path, capsys, old, new, message):
    broken = tmp_path / "plan.yaml"
    assert old in PLAN.read_text()
    broken.write_text(PLAN.read_text().replace(old, new, 1))
    assert main([str(broken), "--commands", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {broken}: ") and message in error and len(error.strip().splitlines()) == 1


def test_cell_folders_may_follow_the_page_option(tmp_path, capsys):
    assert main([str(PLAN), "--page", str(tmp_path / "page.md"), str(tmp_path)]) == 2
    assert "holds neither a sweep (cells/) nor saved cells" in capsys.readouterr().err  # read as a folder of cells


def test_a_cell_with_other_settings_than_the_plans_config_or_given_twice_is_refused():
    plan = load_plan(PLAN)
    cell = fake_cell(plan.orders[0], "ewc", 200, dict.fromkeys(plan.orders[0], 1.0), plan.digest)
    with pytest.raises(ResultsError, match=r"has (env|agent|network)\.\w+=.*; the plan.s configs/minatar.yaml gives"):
        check_cells(plan, [cell])
    minatar = fake_cell(plan.orders[0], "ewc", 200, dict.fromkeys(plan.orders[0], 1.0), plan.digest)
    for section in ("env", "agent", "network"):
        minatar.config[section] = dict(analysis_plan.plan_config(plan).to_dict()[section])
    check_cells(plan, [minatar])
    with pytest.raises(ResultsError, match="is given twice"):
        check_cells(plan, [minatar, minatar])


def test_references_resampled_over_seeds_use_the_drawn_seeds_only():
    scores = {BREAKOUT: {1010: 4.0, 1011: 8.0}}
    assert references_from(scores, [1010, 1010]).pop(BREAKOUT).reference == 4.0
    assert math.isclose(references_from(scores).pop(BREAKOUT).reference, 6.0)


def test_the_page_of_a_finished_plan_prints_the_primary_verdict_first_and_its_reference_sensitivity(monkeypatch):
    monkeypatch.setattr(analysis_plan, "RESAMPLES", 100)
    plan = load_plan(PLAN)
    page = analysis_plan.build_page(plan, planned_cells(plan, ewc_gain=1.0), "plan.yaml")
    primary = page.split("## Primary")[1].split("## Secondary")[0]
    assert "| ewc − finetune (both orders) | 20 of 20 |" in primary and "| **ewc beats finetune** | 0.00 |" in primary
    secondary = page.split("## Secondary")[1].split("## References")[0]
    assert secondary.count("**") == 2 * 3 and secondary.count("| not shown |") == 5
    exploratory = page.split("## Exploratory")[1].split("## References")[0]
    ewc_row = next(line for line in exploratory.splitlines() if line.startswith("| ewc | breakout → space_invaders | 20 of 20 |"))
    assert "—" not in ewc_row and ewc_row.count("[") == 4


def test_export_keeps_the_evaluated_cells_beside_the_plan_and_the_page_counts_them(tmp_path):
    plan_file = tmp_path / "plan" / "plan.yaml"
    plan_file.parent.mkdir()
    shutil.copy(PLAN, plan_file)
    plan = load_plan(plan_file)
    shared = analysis_plan.plan_config(plan).to_dict()
    cells = []
    for seed in plan.reference_seeds[:3]:
        cell = fake_cell(("minatar:breakout",), "finetune", seed, {BREAKOUT: 9.0}, plan.digest)
        for section in ("env", "agent", "network"):
            cell.config[section] = dict(shared[section])
        cells.append(cell)
    sweep_output = tmp_path / "saved"
    export_cells(cells, sweep_output)
    assert main([str(plan_file), "--export", str(sweep_output)]) == 0
    assert sorted(path.name for path in (plan_file.parent / "cells").glob("*.json")) == [
        f"minatar_breakout-finetune-s{seed}.json" for seed in plan.reference_seeds[:3]
    ]
    page = tmp_path / "page.md"
    assert main([str(plan_file), str(plan_file.parent / "cells"), "--page", str(page)]) == 0
    assert "3 of 410 planned cells" in page.read_text() and "| minatar:breakout | 3 of 10 |" in page.read_text()


def test_export_without_folders_or_with_a_broken_cell_is_one_line(tmp_path, capsys):
    assert main([str(PLAN), "--export"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --export needs the sweep directories (or saved-cell folders) to save the cells of"
    )
    (tmp_path / "broken.json").write_text("{not json")
    assert main([str(PLAN), "--export", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
