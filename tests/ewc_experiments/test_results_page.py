"""The results page on a hand-made sweep: eval.json files with known scores, no event files.

Main order minatar:breakout -> minatar:space_invaders, fine-tuning and EWC (lambda 100) with two seeds
each, and one EWC cell at lambda 1000 (the lambda sweep). References are set to (0, 10) for breakout
and (0, 20) for space_invaders, so a normalised score is the raw score / 10 or / 20.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from envs import games
from ewc_experiments import results_page, statistics
from ewc_experiments.results_cells import ResultsError, file_name, load_cells
from ewc_experiments.results_markdown import build_page, seed_lines
from ewc_experiments.results_scores import cell_metrics, choose_lambda, reference_lines, references, tradeoff_points
from ewc_experiments.statistics import column_estimates, global_numpy_seed, interval_estimates
from ewc_training.config import Config

pytest.importorskip("rliable", exc_type=ImportError)  # missing, or installed but unusable

BREAKOUT, INVADERS = "minatar:breakout", "minatar:space_invaders"
MAIN = (BREAKOUT, INVADERS)
RAW = {
    # (method, lambda, seed): mean raw score [[breakout, invaders] after game 1, [breakout, invaders] after game 2]
    ("finetune", None, 0): [[10, 2], [2, 20]],
    ("finetune", None, 1): [[8, 0], [0, 16]],
    ("ewc", 100.0, 0): [[10, 2], [6, 14]],
    ("ewc", 100.0, 1): [[6, 4], [5, 12]],
    ("ewc", 1000.0, 0): [[9, 0], [8, 4]],
}


@pytest.fixture(autouse=True)
def quick_and_fixed_references(monkeypatch):
    monkeypatch.setattr(statistics, "BOOTSTRAP_REPS", 200)
    monkeypatch.setattr(games, "MINATAR_REFERENCE_SCORES", {"breakout": (0.0, 10.0), "space_invaders": (0.0, 20.0)})


def write_cell(sweep: Path, order, method, strength, seed, raw, evaluated=True) -> str:
    config = Config()
    config.run.games, config.run.seed, config.run.steps_per_game = list(order), seed, 60_000
    config.network.architecture = "minatar"
    config.consolidation.method = method
    config.consolidation.ewc_lambda = 400.0 if strength is None else strength
    name = f"{file_name('-'.join(order))}-{method}{'' if strength is None else f'-lambda{strength:g}'}-s{seed}"
    run = sweep / "cells" / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if evaluated:
        rows = [
            {
                "checkpoint": f"after_{k}_{game}.pt",
                "label": f"after game {k} ({game})",
                "games_done": k,
                "step_in_game": 0,
                "trained_game": game,
                "cells": {g: {"scores": [value - 1.0, value + 1.0]} for g, value in zip(order, raw[k - 1])},
            }
            for k, game in enumerate(order, start=1)
        ]
        evaluation = {
            "sequence": list(order),
            "rows": rows,
            "metrics": {},
            "errors": [],
            "protocol": {"episodes": 2, "epsilon": 0.05, "max_episode_frames": 10_000, "seed": 0},
        }
        (run / "eval" / "eval.json").write_text(json.dumps(evaluation))
    return name


@pytest.fixture
def sweep(tmp_path) -> Path:
    where = tmp_path / "sweep"
    for (method, strength, seed), raw in RAW.items():
        write_cell(where, MAIN, method, strength, seed, raw)
    write_cell(where, MAIN, "l2", 1.0, 0, None, evaluated=False)  # still training
    return where


def page_of(sweep: Path, tmp_path: Path):
    cells, incomplete = load_cells(sweep)
    return build_page(cells, incomplete, tmp_path / "page" / "minatar", tmp_path / "page", MAIN)


def metric(page, method, strength, name, statistic=1):
    """A group's metric: statistic 0 is the IQM, 1 the mean (equal with two seeds)."""
    return page.summaries[(MAIN, method, strength)].metrics[name][statistic]


def test_matrix_means_are_over_seeds_in_raw_and_normalised_score(sweep, tmp_path):
    page = page_of(sweep, tmp_path)
    finetune = page.summaries[(MAIN, "finetune", None)]
    expected_raw = {(1, BREAKOUT): 9.0, (1, INVADERS): 1.0, (2, BREAKOUT): 1.0, (2, INVADERS): 18.0}
    for cell, value in expected_raw.items():
        assert finetune.raw[cell][1].value == pytest.approx(value)
    ewc = page.summaries[(MAIN, "ewc", 100.0)]
    expected_normalised = {(1, BREAKOUT): 0.8, (1, INVADERS): 0.15, (2, BREAKOUT): 0.55, (2, INVADERS): 0.65}
    for cell, value in expected_normalised.items():
        iqm, mean = ewc.norm[cell]
        assert mean.value == pytest.approx(value) and iqm.value == pytest.approx(value)  # two seeds: IQM = mean
        assert mean.low <= mean.value <= mean.high
    np.testing.assert_allclose(ewc.mean_matrix, [[0.8, 0.15], [0.55, 0.65]])


def test_forgetting_backward_transfer_retention_and_cost(sweep, tmp_path):
    page = page_of(sweep, tmp_path)
    # fine-tuning forgets breakout: 1.0 -> 0.2 and 0.8 -> 0.0; EWC 1.0 -> 0.6 and 0.6 -> 0.5
    assert metric(page, "finetune", None, "forgetting").value == pytest.approx(0.8)
    assert metric(page, "ewc", 100.0, "forgetting").value == pytest.approx(0.25)
    assert metric(page, "ewc", 100.0, "backward_transfer").value == pytest.approx(-0.25)
    assert metric(page, "ewc", 100.0, "retention").value == pytest.approx(0.55)
    assert metric(page, "ewc", 100.0, "retention_fraction").value == pytest.approx((0.6 / 1.0 + 0.5 / 0.6) / 2)
    # invaders after game 2: EWC 0.7 and 0.6 against fine-tuning's mean 0.9
    cost = metric(page, "ewc", 100.0, "cost")
    assert cost.value == pytest.approx(-0.25) and cost.low == pytest.approx(-0.3) and cost.high == pytest.approx(-0.2)
    assert math.isnan(metric(page, "finetune", None, "cost").value)
    assert metric(page, "ewc", 100.0, "final_mean").value == pytest.approx(0.6)
    assert metric(page, "finetune", None, "final_mean").value == pytest.approx(0.5)


def test_a_score_past_the_single_game_agent_counts_in_the_final_mean_but_is_clipped_in_the_total(tmp_path):
    write_cell(tmp_path, MAIN, "finetune", None, 0, [[12, 0], [3, 30]])  # after game 2: breakout 0.3, invaders 1.5
    cells, _ = load_cells(tmp_path)
    figures = cell_metrics(cells[0], references(cells))
    assert figures["final_mean"] == pytest.approx(0.9)
    assert figures["total_clipped"] == pytest.approx(0.3 + 1.0)


def test_the_lambda_sweep_picks_the_highest_final_mean(sweep, tmp_path, capsys):
    cells, _ = load_cells(sweep)
    with pytest.raises(ResultsError, match="unequal orders or seeds"):  # lambda 1000 has one seed, 100 two
        choose_lambda(cells, references(cells), "ewc")
    write_cell(sweep, MAIN, "ewc", 1000.0, 1, [[9, 0], [10, 4]])  # final mean 0.6; 0.5 for seed 0
    cells, _ = load_cells(sweep)
    assert choose_lambda(cells, references(cells), "ewc") == 100.0  # final mean 0.6 at 100, 0.55 at 1000
    assert results_page.main([str(sweep), "--choose-lambda", "ewc", "--main-order", ",".join(MAIN)]) == 0
    assert capsys.readouterr().out == "100\n"
    assert results_page.main([str(sweep), "--choose-lambda", "online-ewc"]) == 2
    assert "no online-ewc cell with a lambda" in capsys.readouterr().err
    page = page_of(sweep, tmp_path)
    assert page.chosen == {"ewc": 100.0}
    # pooled over seeds 0 and 1 (see test_forgetting_backward_transfer_retention_and_cost): retention 0.55,
    # space_invaders 0.65, final mean 0.6; lambda 1000: breakout 0.8 and 1.0, space_invaders 0.2 twice
    assert "| 100 | 1 | 2 | 0.55 | 0.65 | 0.60 |" in page.markdown
    assert "| 1000 | 1 | 2 | 0.90 | 0.20 | 0.55 |" in page.markdown


def test_the_page_without_event_files(sweep, tmp_path):
    text = page_of(sweep, tmp_path).markdown
    assert "bash scripts/minatar_experiment.sh" in text and "| agent steps per game | 60,000" in text
    assert "no curves available" in text and "No curves available" in text
    assert "- `minatar_breakout-minatar_space_invaders-l2-lambda1-s0`: not started" in text
    assert "envs.games.MINATAR_REFERENCE_SCORES" in text
    # paired by seed, normalised (breakout / 10, space_invaders / 20): final means EWC 0.65, 0.55 against
    # fine-tuning 0.6, 0.4 (differences 0.05, 0.15); first game 0.6, 0.5 against 0.2, 0.0; last game 0.7, 0.6
    # against 1.0, 0.8; frozen after game 1 (fine-tuning's first row): 0.55, 0.4; total clipped scores
    # (no score above 1) 1.3, 1.1 against 1.2, 0.8 (differences 0.1, 0.3)
    t = 12.706204736  # t_{0.975, 1}
    half, clipped_half = (t * np.std(differences, ddof=1) / math.sqrt(2) for differences in ([0.05, 0.15], [0.1, 0.3]))
    assert (
        f"final mean +0.10 [{0.10 - half:+.2f}, {0.10 + half:+.2f}]; "
        f"total clipped score +0.20 [{0.20 - clipped_half:+.2f}, {0.20 + clipped_half:+.2f}]; first game after the last +0.45 ["
    ) in text
    assert "On the balance (final mean) ewc λ=100 is not shown to beat fine-tuning, nor to do worse: the 95% interval" in text
    assert "higher on 2 of 2 seeds, unpaired probability of improvement P(ewc λ=100 > fine-tuning) = 0.75." in text
    assert "minus a network frozen after game 1, final mean: +0.12 [" in text
    assert sorted(path.name for path in (tmp_path / "page" / "minatar").glob("*.png")) == [
        "matrix_ewc-lambda100_minatar_breakout-minatar_space_invaders.png",
        "matrix_finetune_minatar_breakout-minatar_space_invaders.png",
        "tradeoff.png",  # the lambda sweep's trade-off: EWC at lambda 100 and 1000
    ]


def test_saved_cells_rebuild_the_same_tables(sweep, tmp_path):
    out = tmp_path / "docs" / "minatar.md"
    assert results_page.main([str(sweep), "--out", str(out), "--main-order", ",".join(MAIN)]) == 0
    saved = tmp_path / "docs" / "minatar" / "cells"
    assert len(list(saved.glob("*.json"))) == len(RAW)  # the unfinished cell is not saved
    first = out.read_text()
    assert results_page.main([str(saved), "--out", str(out)]) == 0

    def tables(text: str) -> str:  # all but the list of cells, which names the unfinished one only from the sweep
        return text.split("## Cells")[0].replace(" (1 incomplete, listed at the end)", "")

    assert tables(out.read_text()) == tables(first)


def test_measured_references_when_envs_games_has_none(sweep, monkeypatch):
    monkeypatch.setattr(games, "MINATAR_REFERENCE_SCORES", {})
    cells, _ = load_cells(sweep)
    refs = references(cells)
    breakout, invaders = refs[BREAKOUT], refs[INVADERS]
    assert (breakout.random, breakout.reference, breakout.seeds) == (games.MINATAR_RANDOM_SCORES["breakout"], 9.0, 2)
    assert "single game" in breakout.source
    assert invaders.reference == 18.0 and "after other games" in invaders.source  # no cell trains it first yet
    assert '"breakout": (0.51, 9.000),' in reference_lines(refs)

    for seed, score in ((0, 21.0), (1, 23.0)):  # the reverse order trains space_invaders alone first
        write_cell(sweep, MAIN[::-1], "finetune", None, seed, [[score, 0.0], [5.0, 1.0]])
    refs = references(load_cells(sweep)[0])
    assert refs[INVADERS].reference == 22.0 and "single game" in refs[INVADERS].source


def test_one_bootstrap_for_many_columns_matches_interval_estimates_per_column():
    table = np.random.default_rng(0).normal(size=(6, 3))
    table[0, 2] = math.nan  # left out of its column only
    estimates = column_estimates(table)
    for j in range(3):
        column = table[np.isfinite(table[:, j]), j][:, None]
        for statistic, (iqm, mean) in (("iqm", estimates[j]), ("mean", estimates[j])):
            with global_numpy_seed(0):
                alone = interval_estimates({"x": column}, statistic)["x"]
            assert (iqm if statistic == "iqm" else mean).value == pytest.approx(alone.value)
    with global_numpy_seed(0):
        first_alone = interval_estimates({"x": table[:, :1]}, "iqm")["x"]
    together = column_estimates(table[:, :1])[0][0]
    assert (together.value, together.low, together.high) == pytest.approx(
        (first_alone.value, first_alone.low, first_alone.high)
    )  # same resamples
    one_run = column_estimates(np.array([[0.3, math.nan]]))
    assert one_run[0][0].value == 0.3 and math.isnan(one_run[0][0].low) and math.isnan(one_run[1][0].value)


def test_event_files_give_the_curves_the_plots_and_the_wall_times(sweep, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    finetune = [f"{file_name('-'.join(MAIN))}-finetune-s{seed}" for seed in (0, 1)]
    for seed, name in enumerate(finetune):
        writer = SummaryWriter(str(sweep / "cells" / name))
        for step in range(20_000, 120_001, 20_000):  # wall time 1,200 .. 2,200 s
            for game in MAIN:
                writer.add_scalar(f"eval/{game}/score", step / 10_000 + seed, step, walltime=1_000 + step / 100)
        for episode in range(1_200):  # wall time 1,000 .. 2,199 s
            writer.add_scalar(f"charts/{BREAKOUT}/episodic_return", float(episode % 7), 50 * episode, walltime=1_000 + episode)
        writer.close()
    (sweep / "logs").mkdir()
    (sweep / "logs" / f"{finetune[0]}.log").write_text(
        "$ evaluate.py\nx on y: 1.0 ± 0.0 (2 episodes, 1.5 s)\nx on z: 2.0 ± 1.0 (2 episodes, 4.5 s)\n"
    )
    out = tmp_path / "docs" / "minatar.md"
    assert results_page.main([str(sweep), "--out", str(out)]) == 0

    curves = json.loads((tmp_path / "docs" / "minatar" / "cells" / f"{file_name(finetune[1])}.curves.json").read_text())
    assert curves[f"eval/{INVADERS}/score"][:2] == [[20_000.0, 3.0], [40_000.0, 5.0]]
    returns = curves[f"charts/{BREAKOUT}/episodic_return"]
    assert len(returns) == 500 and returns[-1][0] == 50 * 1_199  # averaged down, last step kept
    text = out.read_text()
    assert "(minatar/curves_minatar_breakout-minatar_space_invaders.png)" in text and "(minatar/single_game.png)" in text
    assert "no curves available" not in text.lower()
    assert f"| `{finetune[0]}` | 0.60 | 20.0 | 0.1 |" in text  # 1,200 s of training, 6 s of evaluation
    assert f"| `{finetune[1]}` | 0.40 | 20.0 | n/a |" in text  # no log
    assert all(
        (tmp_path / "docs" / "minatar" / image).is_file()
        for image in ("curves_minatar_breakout-minatar_space_invaders.png", "single_game.png")
    )


def test_saved_cells_restore_into_a_sweep_that_then_skips_them(sweep, tmp_path):
    from ewc_experiments.sweep_plan import EVALUATED, cell_state

    out = tmp_path / "docs" / "minatar.md"
    assert results_page.main([str(sweep), "--out", str(out), "--export-only"]) == 0
    fresh = tmp_path / "fresh-sweep"
    assert results_page.main([str(out.parent / "minatar" / "cells"), "--restore-into", str(fresh)]) == 0
    restored = sorted((fresh / "cells").iterdir())
    assert len(restored) == len(RAW)
    for run_dir in restored:
        order = tuple(json.loads((run_dir / "eval" / "eval.json").read_text())["sequence"])
        assert cell_state(run_dir, order) == EVALUATED
    again, _ = load_cells(fresh)
    assert sorted(data.name for data in again) == sorted(run_dir.name for run_dir in restored)


def test_a_restored_sweep_exports_the_wall_times_and_curves_it_was_restored_from(sweep, tmp_path):
    """A restored cell has no event files or log of its own: exporting its sweep again (as each stage of
    scripts/minatar_experiment.sh does) must save the timing and curves it came with, not blanks."""
    saved = tmp_path / "saved"
    assert results_page.main([str(sweep), "--out", str(saved.with_suffix(".md")), "--export-only"]) == 0
    cells = saved.parent / "saved" / "cells"
    first = sorted(path for path in cells.glob("*.json") if not path.name.endswith(".curves.json"))[0]
    timing = {"train_start": 1000.0, "train_end": 2200.0, "eval_seconds": 6.0}
    first.write_text(json.dumps({**json.loads(first.read_text()), "timing": timing}))
    curves = {"eval/minatar:breakout/mean_score": [[25_000.0, 1.5], [50_000.0, 2.5]]}
    first.with_name(first.name.removesuffix(".json") + ".curves.json").write_text(json.dumps(curves))
    fresh = tmp_path / "fresh-sweep"
    assert results_page.main([str(cells), "--restore-into", str(fresh)]) == 0
    again = tmp_path / "again"
    assert results_page.main([str(fresh), "--out", str(again.with_suffix(".md")), "--export-only"]) == 0
    exported = again.parent / "again" / "cells" / first.name
    assert json.loads(exported.read_text())["timing"] == timing
    assert json.loads(exported.with_name(first.name.removesuffix(".json") + ".curves.json").read_text()) == curves

    restored = fresh / "cells" / first.name.removesuffix(".json")
    (restored / "restored.json").unlink()  # restored before cells kept their timing: a new restore adds it
    assert results_page.main([str(cells), "--restore-into", str(fresh)]) == 0
    assert json.loads((restored / "restored.json").read_text())["timing"] == timing
    for wrong in ("[1, 2]", '{"curves": [1, 2], "timing": "abc"}', "not json"):
        (restored / "restored.json").write_text(wrong)
        by_name = {data.name: data for data in load_cells(fresh)[0]}
        assert by_name[restored.name].timing == {"eval_seconds": None} and by_name[restored.name].curves == {}


def test_check_references_compares_envs_games_with_what_single_game_cells_measure(sweep, monkeypatch, capsys):
    # the main order's fine-tuning cells train breakout first: 8.0 and 10.0 on seeds 0 and 1 (see the fixture)
    monkeypatch.setattr(games, "MINATAR_REFERENCE_SCORES", {"breakout": (0.51, 9.0), "space_invaders": (2.95, 18.0)})
    assert results_page.main([str(sweep), "--check-references"]) == 0
    monkeypatch.setattr(games, "MINATAR_REFERENCE_SCORES", {"breakout": (0.51, 2.712), "space_invaders": (2.95, 18.0)})
    assert results_page.main([str(sweep), "--check-references"]) == 2
    captured = capsys.readouterr()
    assert '"breakout": (0.51, 9.000),' in captured.out and "space_invaders" not in captured.out
    assert "differs from what" in captured.err and "minatar:breakout" in captured.err
    assert results_page.main([str(sweep), "--print-references"]) == 0  # measured, whatever the table holds
    assert '"breakout": (0.51, 9.000),' in capsys.readouterr().out


def test_the_lambda_section_reads_the_selection_cells_and_draws_the_tradeoff(sweep, tmp_path):
    # selection cells on seeds of their own (7, 8), in a sweep of their own: EWC at lambda 10 and 1000
    selection = tmp_path / "selection"
    for strength, seed, raw in ((10.0, 7, [[10, 0], [2, 18]]), (10.0, 8, [[10, 0], [4, 18]]), (1000.0, 7, [[10, 0], [9, 2]])):
        write_cell(selection, MAIN, "ewc", strength, seed, raw)
    write_cell(selection, MAIN, "ewc", 1000.0, 8, [[10, 0], [9, 6]])
    points = tradeoff_points(load_cells(selection)[0], references(load_cells(sweep)[0]), "ewc")
    # lambda 10: breakout 0.2 and 0.4 kept, space_invaders 0.9 twice; lambda 1000: 0.9 kept, 0.1 and 0.3 learned
    assert [point.strength for point in points] == [10.0, 1000.0]
    assert points[0].retention.value == pytest.approx(0.3) and points[0].last_game.value == pytest.approx(0.9)
    assert points[1].retention.value == pytest.approx(0.9) and points[1].last_game.value == pytest.approx(0.2)
    half = 12.706204736 * np.std([0.2, 0.4], ddof=1) / math.sqrt(2)
    assert (points[0].retention.low, points[0].retention.high) == pytest.approx((0.3 - half, 0.3 + half))
    out = tmp_path / "docs" / "minatar.md"
    assert results_page.main([str(sweep), "--selection", str(selection), "--out", str(out)]) == 0
    text = out.read_text()
    # the sweep's own lambdas (100, 1000 on seeds 0, 1) are not the lambda section's: the selection's are
    assert "| 10 | 1 | 2 | 0.30 | 0.90 | 0.60 |" in text and "| 100 | 1 |" not in text
    assert "(minatar/tradeoff.png)" in text and (tmp_path / "docs" / "minatar" / "tradeoff.png").is_file()
    # which seeds served which purpose
    assert "| sequences reported on this page (held out from every choice) | 0-1 |" in text
    assert "| lambda selection (its sweeps below; never reported as a result) | 7-8 |" in text
    assert "more than one purpose" not in text


def test_a_seed_used_for_selection_and_for_the_results_is_named(sweep, tmp_path):
    selection = tmp_path / "selection"
    write_cell(selection, MAIN, "ewc", 10.0, 1, [[10, 0], [2, 18]])
    write_cell(selection, MAIN, "ewc", 10.0, 5, [[10, 0], [2, 18]])
    lines = seed_lines(load_cells(sweep)[0], load_cells(selection)[0])
    assert "| lambda selection (its sweeps below; never reported as a result) | 1, 5 |" in lines
    assert lines[-1] == "**Seeds used for more than one purpose: 1.**"


def write_modulated_cell(sweep: Path, tmp_path: Path, method, strength, seed, raw) -> None:
    """`method`'s cell trained with per-game biases and gains, moved into `sweep` under its
    `-modulated` name (written elsewhere first: write_cell names it after the plain method)."""
    elsewhere = tmp_path / "modulated"
    name = write_cell(elsewhere, MAIN, method, strength, seed, raw)
    config = yaml.safe_load((elsewhere / "cells" / name / "config.yaml").read_text())
    config["network"]["per_game_modulation"] = True
    (elsewhere / "cells" / name / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (elsewhere / "cells" / name).rename(sweep / "cells" / name.replace(f"-{method}", f"-{method}-modulated", 1))


def test_modulated_cells_are_a_method_of_their_own_and_every_method_meets_fine_tuning(sweep, tmp_path):
    """A cell trained with per-game biases and gains is `ewc-modulated`, never pooled with plain EWC (the
    sweep's own ewc λ=100 cells on the same seeds); the Outcome pairs every method with fine-tuning, EWC first."""
    for seed, raw in ((0, [[10, 0], [7, 10]]), (1, [[8, 0], [6, 8]])):
        write_modulated_cell(sweep, tmp_path, "ewc", 100.0, seed, raw)
    cells, _ = load_cells(sweep)
    methods = {(data.cell.method, data.cell.seed) for data in cells if data.cell.ewc_lambda == 100.0}
    assert methods == {("ewc", 0), ("ewc", 1), ("ewc-modulated", 0), ("ewc-modulated", 1)}
    page = page_of(sweep, tmp_path)
    outcome = page.markdown[page.markdown.index("## Outcome") :]
    assert outcome.index("ewc λ=") < outcome.index("ewc-modulated λ=100 minus fine-tuning")
    assert "ewc-modulated λ=100 minus ewc λ=100, paired over 2 seeds" in outcome  # what modulation adds


def test_fine_tuning_with_per_game_biases_and_gains_is_the_control_of_a_modulated_method(sweep, tmp_path):
    """With `finetune-modulated` cells, the Outcome says what the per-game parameters give alone (against
    fine-tuning, once) and what EWC adds beyond them (ewc-modulated against finetune-modulated)."""
    raws = {("ewc", 100.0): ([[10, 0], [7, 10]], [[8, 0], [6, 8]]), ("finetune", None): ([[10, 0], [3, 18]], [[8, 0], [1, 16]])}
    for (method, strength), per_seed in raws.items():
        for seed, raw in enumerate(per_seed):
            write_modulated_cell(sweep, tmp_path, method, strength, seed, raw)
    outcome = page_of(sweep, tmp_path).markdown.split("## Outcome")[1]
    assert outcome.count("finetune-modulated minus fine-tuning, paired over 2 seeds") == 1
    assert outcome.count("ewc-modulated λ=100 minus finetune-modulated, paired over 2 seeds") == 1
    assert outcome.count("ewc-modulated λ=100 minus ewc λ=100, paired over 2 seeds") == 1


def test_ewc_meets_l2_on_the_seeds_they_share(sweep, tmp_path):
    """With L2 cells beside EWC's, the Outcome also pairs EWC with L2 (what the Fisher's weighting adds to
    a uniform pull back to θ*), once, after both have met fine-tuning."""
    for seed, raw in ((0, [[10, 2], [4, 16]]), (1, [[8, 0], [3, 14]])):
        write_cell(sweep, MAIN, "l2", 10.0, seed, raw)
    outcome = page_of(sweep, tmp_path).markdown.split("## Outcome")[1]
    assert outcome.count("l2 λ=10 minus fine-tuning, paired over 2 seeds") == 1
    assert outcome.count("ewc λ=100 minus l2 λ=10, paired over 2 seeds") == 1
    # EWC's final means (0.65, 0.55) against L2's (0.60, 0.50): 0.05 higher on both seeds, breakout kept
    # 0.2 better (0.6 and 0.5 against 0.4 and 0.3), space_invaders 0.1 worse; no score above 1, so the
    # total clipped score is twice the final mean
    expected = (
        "final mean +0.05 [+0.05, +0.05]; total clipped score +0.10 [+0.10, +0.10]; "
        "first game after the last +0.20 [+0.20, +0.20]; last game -0.10"
    )
    differences = "(mean difference of normalised scores [95% Student-t interval])"
    assert f"ewc λ=100 minus l2 λ=10, paired over 2 seeds {differences}: {expected}" in outcome


def test_where_and_from_which_code_cells_trained_survives_export_and_restore(sweep, tmp_path):
    """A cell's run.json (commit, machine, torch) travels into the saved cells and back into a restored
    sweep, whose next export keeps it; the page says what the cells recorded."""
    info = {"git_commit": "0123456789abcdef", "started": "2026-12-04T10:00:00+0000", "torch": "2.13.0+cpu"}
    info |= {"device_name": "x86_64", "machine": "Test CPU, 2 cores", "python": "3.11"}
    recorded = sorted((sweep / "cells").iterdir())[0]
    (recorded / "run.json").write_text(json.dumps(info))
    out = tmp_path / "docs" / "minatar.md"
    assert results_page.main([str(sweep), "--out", str(out), "--export-only"]) == 0
    saved = out.parent / "minatar" / "cells"
    with_provenance = [data for data in load_cells(saved)[0] if data.provenance]
    assert [data.name for data in with_provenance] == [recorded.name]
    assert with_provenance[0].provenance == {
        key: info[key] for key in ("git_commit", "started", "torch", "device_name", "machine")
    }
    fresh = tmp_path / "fresh-sweep"
    assert results_page.main([str(saved), "--restore-into", str(fresh)]) == 0
    assert [data.provenance for data in load_cells(fresh)[0] if data.provenance] == [with_provenance[0].provenance]
    text = page_of(saved, tmp_path).markdown
    assert (
        f"1 of {len(load_cells(saved)[0])} cells recorded where they ran: Test CPU, 2 cores; torch 2.13.0+cpu; commits 0123456"
        in text
    )


def test_the_outcome_says_how_far_each_game_learned_and_names_one_that_did_not(sweep, tmp_path):
    """Fine-tuning's score on each game right after training on it says whether the sequence's budget let
    that game learn; a game under half its single-game score is named, since keeping it means little."""
    outcome = page_of(sweep, tmp_path).markdown.split("## Outcome")[1]
    # breakout after game 1: 10/10 and 8/10; space_invaders after game 2: 20/20 and 16/20
    assert "right after training on it (mean over seeds): minatar:breakout 0.90, minatar:space_invaders 0.90." in outcome
    assert "did not reach" not in outcome
    slow = tmp_path / "slow"
    for seed, raw in ((0, [[10, 2], [2, 6]]), (1, [[8, 0], [0, 4]])):  # space_invaders learns to 0.3 and 0.2
        write_cell(slow, MAIN, "finetune", None, seed, raw)
        write_cell(slow, MAIN, "ewc", 100.0, seed, raw)
    outcome = page_of(slow, tmp_path).markdown.split("## Outcome")[1]
    assert (
        "minatar:breakout 0.90, minatar:space_invaders 0.25. minatar:space_invaders did not reach 0.5 of its single-game"
        in outcome
    )


def test_a_cell_resumed_without_its_replay_is_named_on_the_page(sweep, tmp_path):
    """A resume that refilled the replay mid-game (run.json, ewc_training/run_dir.py) survives export and
    restore, and the page names the cell and where: its results are not an uninterrupted run's."""
    assert "without a saved replay" not in page_of(sweep, tmp_path).markdown
    resumed = next(cell for cell in sorted((sweep / "cells").iterdir()) if "-finetune-" in cell.name)
    refill = {"game": "minatar:space_invaders", "step_in_game": 100_000}
    info = {"git_commit": "0123456789abcdef", "resumed": [{"total_steps": 60_000}, {"replay_refilled": refill}]}
    (resumed / "run.json").write_text(json.dumps(info))
    out = tmp_path / "docs" / "minatar.md"
    assert results_page.main([str(sweep), "--out", str(out), "--export-only"]) == 0
    saved = out.parent / "minatar" / "cells"
    fresh = tmp_path / "fresh-sweep"
    assert results_page.main([str(saved), "--restore-into", str(fresh)]) == 0
    flagged = {data.name: data.provenance.get("resumed_without_replay") for data in load_cells(fresh)[0]}
    assert flagged.pop(resumed.name) == "minatar:space_invaders at step 100,000"
    assert set(flagged.values()) == {None}
    text = page_of(fresh, tmp_path).markdown
    assert "**Resumed mid-game without a saved replay** (the game refilled it" in text
    assert f"not an uninterrupted run's): {resumed.name} (minatar:space_invaders at step 100,000)." in text


def test_forward_transfer_is_each_later_game_right_after_its_training_against_the_single_game_reference():
    from ewc_experiments.results_scores import Reference, cell_metrics
    from tests.ewc_experiments.test_analysis_plan import fake_cell

    refs = {"minatar:breakout": Reference(0.0, 10.0, "test"), "minatar:space_invaders": Reference(2.0, 12.0, "test")}
    # space_invaders, trained second, reaches 9.0 right after its training: normalised 0.7 against the reference's 1
    pair = fake_cell(
        ("minatar:breakout", "minatar:space_invaders"), "ewc", 0, {"minatar:breakout": 5.0, "minatar:space_invaders": 9.0}, ""
    )
    assert cell_metrics(pair, refs)["forward_transfer"] == pytest.approx(-0.3)
    alone = fake_cell(("minatar:breakout",), "finetune", 0, {"minatar:breakout": 5.0}, "")
    assert math.isnan(cell_metrics(alone, refs)["forward_transfer"])
