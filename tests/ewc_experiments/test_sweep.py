"""Sweeps: the grid and its names, where a cell stands, and a tiny real sweep on Ray, run again.

The real sweep is 2 methods x 2 seeds of pong -> breakout at 128 agent steps a game, evaluated on
one episode cut at 200 frames: it checks the machinery, not learning. A second one declares a GPU
to its Ray and checks that cells share it as `--gpus-per-cell` allows (while training on the CPU).
"""

import csv
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import sweep
from ewc_experiments.sweep_plan import (
    EVALUATED,
    INTERRUPTED,
    NEW,
    TRAINED,
    Cell,
    PlannedCell,
    SweepError,
    Task,
    cell_commands,
    cell_state,
    expand_grid,
    expand_orders,
    last_error,
    pack_cells,
    parse_cell_resources,
    plan_sweep,
)
from ewc_experiments.sweep_ray import cell_reservation, run_cell
from ewc_experiments.sweep_report import (
    CellResult,
    agent_steps_per_second,
    cell_result,
    mean_and_std,
    method_tables,
    report_markdown,
)
from ewc_training.config import build_config
from tests.conftest import ROOT, SUBPROCESS_ENV

TINY = [
    "--games",
    "pong,breakout",
    "--config",
    "configs/smoke.yaml",
    "--set",
    "run.steps_per_game=128",
    "--set",
    "agent.learning_starts=64",
    "--set",
    "consolidation.fisher_samples=32",
    "--set",
    "eval.episodes=1",
    "--set",
    "eval.max_episode_frames=200",
    "--set",
    "run.device=cpu",
]
GRID = ["--methods", "ewc,finetune", "--seeds", "0,1", "--ewc-lambda", "100"]
CELLS = [
    "pong-breakout-ewc-lambda100-s0",
    "pong-breakout-ewc-lambda100-s1",
    "pong-breakout-finetune-s0",
    "pong-breakout-finetune-s1",
]


def run_sweep(*args: str) -> subprocess.CompletedProcess:
    """`python sweep.py ARGS` from the project root, as a user would run it."""
    return subprocess.run(
        [sys.executable, "sweep.py", *args], cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600
    )


def spread(values: list[float]) -> str:
    mean, std = mean_and_std(values)
    return f"{mean:.3f} ± {std:.3f}"


# ---- the grid, pure ----


def test_orders_given_both_and_random():
    games = ["pong", "breakout", "seaquest"]
    assert expand_orders(games, "given") == [("pong", "breakout", "seaquest")]
    assert expand_orders(games, "both") == [("pong", "breakout", "seaquest"), ("seaquest", "breakout", "pong")]
    assert expand_orders(["pong", "breakout", "pong"], "both") == [("pong", "breakout", "pong")]  # its own reverse
    four = expand_orders(games, "4-random")
    assert len(set(four)) == 4 and all(sorted(order) == sorted(games) for order in four)
    assert expand_orders(games, "2-random") == four[:2]  # same draw again, and a larger N extends it
    assert len(expand_orders(games, "6-random")) == 6  # every ordering of three games
    with pytest.raises(SweepError, match="only 6 distinct"):
        expand_orders(games, "7-random")
    with pytest.raises(SweepError, match="only 3 distinct"):
        expand_orders(["pong", "pong", "breakout"], "4-random")
    for bad in ("reversed", "0-random", "x-random", "3-shuffled"):
        with pytest.raises(SweepError, match="--orders"):
            expand_orders(games, bad)


def test_grid_gives_finetune_one_cell_per_seed_and_every_cell_its_own_name():
    orders = [("pong", "breakout"), ("breakout", "pong")]
    cells = expand_grid(orders, ["ewc", "online-ewc", "l2", "finetune"], [100.0, 400.0, 1000.0], [0, 1, 2])
    assert len(cells) == 2 * (3 * 3 * 3 + 3)
    assert sum(cell.method == "finetune" for cell in cells) == 2 * 3
    assert all(cell.ewc_lambda is None for cell in cells if cell.method == "finetune")
    names = [cell.name for cell in cells]
    assert len(set(names)) == len(names)
    assert "pong-breakout-ewc-lambda100-s0" in names and "breakout-pong-online-ewc-lambda1000-s2" in names
    assert "pong-breakout-finetune-s1" in names
    assert Cell(("pong",), "l2", 0.5, 3).name == "pong-l2-lambda0.5-s3"


def test_long_sequences_keep_distinct_names():
    games = ["space_invaders", "montezuma_revenge", "private_eye", "chopper_command", "name_this_game"]
    names = {Cell(order, "ewc", 400.0, 0).name for order in expand_orders(games, "5-random")}
    assert len(names) == 5 and all(len(name) < 120 for name in names)


# ---- where a cell stands, from its files ----


def test_cell_state_follows_the_files_train_and_evaluate_leave(tmp_path):
    order, run = ("pong", "breakout"), tmp_path / "cell"
    assert cell_state(run, order) == NEW
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    assert cell_state(run, order) == NEW  # stopped before its first checkpoint: nothing to resume
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    assert cell_state(run, order) == INTERRUPTED
    (run / "checkpoints" / "after_2_breakout.pt").write_bytes(b"")
    assert cell_state(run, order) == TRAINED
    (run / "eval").mkdir()
    end = {"games_done": 2, "step_in_game": 0}
    (run / "eval" / "eval.json").write_text(json.dumps({"rows": [end], "errors": ["after_1_pong.pt: unreadable"]}))
    assert cell_state(run, order) == TRAINED  # an evaluation with errors is done again
    (run / "eval" / "eval.json").write_text(json.dumps({"rows": [{"games_done": 1, "step_in_game": 0}], "errors": []}))
    assert cell_state(run, order) == TRAINED  # an evaluation that misses the last game's end
    (run / "eval" / "eval.json").write_text(json.dumps({"rows": [end], "errors": []}))
    assert cell_state(run, order) == EVALUATED


def test_a_cell_restored_from_saved_results_is_evaluated_without_checkpoints(tmp_path):
    """What results_page --restore-into writes (config.yaml and eval/eval.json) is enough to skip a cell."""
    order, run = ("pong", "breakout"), tmp_path / "cell"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "eval" / "eval.json").write_text(json.dumps({"rows": [{"games_done": 2, "step_in_game": 0}], "errors": []}))
    assert cell_state(run, order) == EVALUATED


def test_each_state_gets_its_commands(tmp_path):
    config, run = build_config(ROOT / "configs" / "smoke.yaml"), tmp_path / "cell"
    arguments = ["--games", "pong,breakout", "--method", "ewc"]
    fresh, evaluate = cell_commands(NEW, run, arguments, config)
    assert fresh == ["train.py", *arguments, "--run-dir", str(run)]
    assert evaluate[:2] == ["evaluate.py", str(run)] and evaluate[evaluate.index("--episodes") + 1] == "1"
    run.mkdir()
    assert cell_commands(NEW, run, arguments, config)[0][-1] == "--overwrite"  # leftovers of a run with no checkpoint
    assert cell_commands(INTERRUPTED, run, arguments, config) == [["train.py", "--resume", str(run)], evaluate]
    assert cell_commands(TRAINED, run, arguments, config) == [evaluate]
    assert cell_commands(EVALUATED, run, arguments, config) == []


def test_last_error_prefers_the_error_line(tmp_path):
    log = tmp_path / "cell.log"
    log.write_text("$ train.py\n[1/2] pong: 10%\r[1/2] pong: 50%\nerror: no CUDA GPU\nTraceback? no\n")
    assert last_error(log) == "error: no CUDA GPU"
    log.write_text("$ train.py\nRuntimeError: boom\n\n")
    assert last_error(log) == "RuntimeError: boom"


def test_mean_and_std_skip_nan_and_need_two_values_for_a_spread():
    mean, std = mean_and_std([0.1, 0.3, math.nan])
    assert mean == pytest.approx(0.2) and std == pytest.approx(math.sqrt(0.02))
    assert math.isnan(mean_and_std([0.4])[1]) and all(math.isnan(v) for v in mean_and_std([math.nan]))


def test_tables_are_over_seeds_per_order_then_over_every_order_and_count_what_failed():
    def result(order, seed, final, forgetting):
        metrics = (
            None
            if final is None
            else {"final_mean_hns": final, "final_total_clipped_hns": 2 * final, "mean_forgetting": forgetting}
        )
        return CellResult(Cell(order, "ewc", 400.0, seed), Path("cell"), metrics, "" if metrics else "error: boom")

    given, reverse = ("pong", "breakout"), ("breakout", "pong")
    lines = method_tables(
        [result(given, 0, 0.1, 0.0), result(given, 1, 0.3, 0.2), result(reverse, 0, 0.5, 0.1), result(reverse, 1, None, None)]
    )
    assert lines[0] == "## ewc"
    assert "| 400 | pong → breakout | 2 | 0.200 ± 0.141 | 0.400 ± 0.283 | 0.100 ± 0.141 |" in lines
    assert "| 400 | breakout → pong | 1 of 2 | 0.500 | 1.000 | 0.100 |" in lines
    assert "| 400 | all 2 orders | 3 of 4 | 0.300 ± 0.200 | 0.600 ± 0.400 | 0.100 ± 0.100 |" in lines


def test_metrics_are_recomputed_from_the_saved_scores_not_read_from_an_older_eval_json(tmp_path):
    """A cell evaluated before forgetting became signed holds the old clipped value (0.0 here): the
    report recomputes it from the episode scores, so old and new cells share one definition."""

    def row(done, pong, breakout):
        return {"games_done": done, "step_in_game": 0, "cells": {"pong": {"scores": pong}, "breakout": {"scores": breakout}}}

    # Pong: HNS (score + 20.7) / 35.3; after game 1 -20.7 (0.0), after game 2 -3.05 (0.5): it improved.
    saved = {
        "sequence": ["pong", "breakout"],
        "rows": [row(1, [-20.7], [1.7]), row(2, [-3.05, -3.05], [30.5])],
        "metrics": {"final_mean_hns": 0.75, "mean_forgetting": 0.0, "backward_transfer": 0.5, "mean_hns_after_game": {}},
        "errors": [],
    }
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(json.dumps(saved))
    result = cell_result(Cell(("pong", "breakout"), "ewc", 400.0, 0), tmp_path)
    assert result.metrics["mean_forgetting"] == pytest.approx(-0.5)  # signed: 0.0 earlier - 0.5 at the end
    assert result.metrics["mean_clipped_forgetting"] == pytest.approx(0.0)
    assert result.metrics["final_total_clipped_hns"] == pytest.approx(1.5)  # 0.5 + 1.0
    assert result.metrics["mean_hns_after_game"] == pytest.approx({1: 0.0, 2: 0.75})


def test_the_report_lists_cells_that_resumed_mid_game_without_their_replay(tmp_path):
    """Where a game refilled its replay (run.json's resumes, or the flat key of a cell restored from saved
    results): such a cell is not an uninterrupted run, and the report names it and where."""
    trained, restored, uninterrupted = (tmp_path / name for name in ("trained", "restored", "uninterrupted"))
    refill = {"total_steps": 1_200, "replay_refilled": {"game": "breakout", "step_in_game": 200}}
    for run_dir, info in (
        (trained, {"git_commit": "abc", "resumed": [refill]}),
        (restored, {"git_commit": "abc", "resumed_without_replay": "pong at step 300"}),
        (uninterrupted, {"git_commit": "abc", "resumed": [{"total_steps": 1_000}]}),
    ):
        run_dir.mkdir()
        (run_dir / "run.json").write_text(json.dumps(info))
    results = [
        cell_result(Cell(("pong", "breakout"), "ewc", 400.0, seed), run_dir)
        for seed, run_dir in enumerate((trained, restored, uninterrupted))
    ]
    assert [result.replay_refilled for result in results] == ["breakout at step 200", "pong at step 300", ""]
    report = report_markdown(tmp_path, results)
    assert "## Cells resumed mid-game without a saved replay" in report
    assert f"- `{results[0].cell.name}`: breakout at step 200\n- `{results[1].cell.name}`: pong at step 300\n" in report
    assert f"`{results[2].cell.name}`: " not in report.split("## Cells without an evaluation")[0]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--methods", "ewc,sgd"], "unknown method 'sgd'"),
        (["--methods", "sgd-modulated"], "unknown method 'sgd-modulated'"),
        (["--methods", "ewc-modulated", "--set", "network.per_game_modulation=false"], "per_game_modulation is off"),
        (["--games", "pong,brekout"], "unknown game 'brekout'"),
        (["--seeds", "0,one"], "--seeds must be a comma list"),
        (["--ewc-lambda", "-1"], "--ewc-lambda must be >= 0"),
        (["--orders", "3-random"], "only 2 distinct"),
        (["--set", "run.seed=5"], "--set run.seed would override the sweep's --seeds"),
        (["--set", "run.games=[breakout, pong]"], "--set run.games would override the sweep's --games"),
        (["--set", "agent.learning_rat=1e-3"], "unknown config key 'agent.learning_rat'"),
        (["--set", "eval.episodes=0"], "eval.episodes"),
        (["--config", "configs/missing.yaml"], "cannot read config"),
        (["--gpus-per-cell", "-0.5"], "--gpus-per-cell must be 0, a fraction in (0, 1] or a whole number"),
        (["--gpus-per-cell", "1.5"], "--gpus-per-cell must be"),
        (["--gpus-per-cell", "half"], "--gpus-per-cell must be"),
        (["--cpus-per-cell", "0"], "--cpus-per-cell must be a whole number >= 1"),
        (["--cpus-per-cell", "1.5"], "--cpus-per-cell must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_made(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(ROOT)
    where = tmp_path / "sweep"
    assert sweep.main([*TINY, *arguments, "--sweep-dir", str(where)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error:") and message in error, error
    assert not where.exists()


def test_an_address_where_nothing_listens_fails_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert sweep.main([*TINY, "--methods", "finetune", "--sweep-dir", str(tmp_path), "--address", "127.0.0.1:9"]) == 2
    assert "nothing answers at --address 127.0.0.1:9" in capsys.readouterr().err


# ---- a tiny real sweep on Ray ----


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    where = tmp_path_factory.mktemp("sweeps") / "tiny"
    result = run_sweep(*TINY, *GRID, "--sweep-dir", str(where))
    assert result.returncode == 0, result.stderr[-3000:]
    return where, result


@pytest.mark.slow
def test_a_tiny_sweep_trains_evaluates_and_reports_every_cell(tiny_sweep):
    where, result = tiny_sweep
    assert sorted(path.name for path in (where / "cells").iterdir()) == CELLS
    for name in CELLS:
        assert (where / "cells" / name / "checkpoints" / "after_2_breakout.pt").is_file()
        assert (where / "logs" / f"{name}.log").read_text().startswith("$ train.py --games pong,breakout")

    rows = {row["cell"]: row for row in csv.DictReader((where / "cells.csv").open())}
    assert sorted(rows) == CELLS and {row["status"] for row in rows.values()} == {"evaluated"}
    for name, row in rows.items():  # each cell's numbers are evaluate.py's, untouched
        metrics = json.loads((where / "cells" / name / "eval" / "eval.json").read_text())["metrics"]
        assert float(row["final_mean_hns"]) == pytest.approx(metrics["final_mean_hns"])
        assert float(row["mean_forgetting"]) == pytest.approx(metrics["mean_forgetting"])
        assert float(row["final_total_clipped_hns"]) == pytest.approx(metrics["final_total_clipped_hns"])
        assert float(row["mean_hns_after_game_1"]) == pytest.approx(metrics["mean_hns_after_game"]["1"])
    assert rows["pong-breakout-finetune-s0"]["ewc_lambda"] == "" and rows["pong-breakout-ewc-lambda100-s1"]["seed"] == "1"

    report = (where / "report.md").read_text()
    assert result.stdout == report + "\n"  # printed as written
    assert "4 cells, 4 evaluated, 0 without an evaluation" in report and "## Cells without an evaluation" not in report
    tables = (("ewc", "100", "pong-breakout-ewc-lambda100-s"), ("finetune", "-", "pong-breakout-finetune-s"))
    for method, strength, prefix in tables:
        cells = [rows[f"{prefix}{seed}"] for seed in (0, 1)]
        columns = ("final_mean_hns", "final_total_clipped_hns", "mean_forgetting")
        spreads = " | ".join(spread([float(row[column]) for row in cells]) for column in columns)
        section = report.split(f"## {method}\n", 1)[1].split("\n## ", 1)[0]
        assert f"| {strength} | pong → breakout | 2 | {spreads} |" in section, section

    with Image.open(where / "mean_hns.png") as plot:
        assert plot.format == "PNG" and plot.width > 400 and plot.height > 300


@pytest.mark.slow
def test_the_same_sweep_again_skips_every_evaluated_cell(tiny_sweep, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    where, _ = tiny_sweep
    files = [*(where / "cells").rglob("*.pt"), *(where / "logs").iterdir()]
    before = {path: path.stat().st_mtime_ns for path in files}
    report = (where / "report.md").read_text()
    assert sweep.main([*TINY, *GRID, "--sweep-dir", str(where)]) == 0  # Ray never starts: nothing to run
    assert "0 to train, 0 to resume, 0 to evaluate, 4 already evaluated" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in files} == before
    assert (where / "report.md").read_text() == report


@pytest.mark.slow
def test_a_cell_trained_with_other_settings_is_refused(tiny_sweep, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    where, _ = tiny_sweep
    assert sweep.main([*TINY, *GRID, "--set", "agent.learning_rate=3e-4", "--sweep-dir", str(where)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "was trained with other settings (agent.learning_rate)" in error
    # how a cell computes (device, update mode) is not what it computes: those cells are still this sweep's
    assert sweep.main([*TINY, *GRID, "--set", "agent.update_mode=eager", "--sweep-dir", str(where)]) == 0
    assert "4 already evaluated" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the failure used here is asking for CUDA where there is none")
def test_a_failing_cell_is_named_in_the_report_and_the_exit_status(tmp_path):
    where = tmp_path / "failing"
    result = run_sweep(*TINY, "--methods", "finetune", "--set", "run.device=cuda", "--sweep-dir", str(where))
    assert result.returncode == 1, result.stderr[-3000:]
    report = (where / "report.md").read_text()
    assert "## Cells without an evaluation" in report and "`pong-breakout-finetune-s0`: error:" in report
    assert "CUDA" in report.split("## Cells without an evaluation", 1)[1]
    assert [row["status"] for row in csv.DictReader((where / "cells.csv").open())] == ["failed"]


@pytest.mark.slow
def test_an_interrupted_cell_is_resumed(tiny_sweep, tmp_path):
    where = tmp_path / "copy"
    shutil.copytree(tiny_sweep[0], where)
    cell = where / "cells" / "pong-breakout-finetune-s1"
    (cell / "checkpoints" / "after_2_breakout.pt").unlink()  # as if stopped during breakout, after pong ended
    finished = cell / "checkpoints" / "after_1_pong.pt"
    finished_bytes, finished_mtime = finished.read_bytes(), finished.stat().st_mtime_ns
    evaluated = cell / "eval" / "eval.json"
    evaluated_mtime = evaluated.stat().st_mtime_ns
    untouched = where / "cells" / "pong-breakout-finetune-s0" / "checkpoints" / "after_2_breakout.pt"
    mtime = untouched.stat().st_mtime_ns
    result = run_sweep(*TINY, *GRID, "--sweep-dir", str(where))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 to resume" in result.stderr
    assert (where / "logs" / f"{cell.name}.log").read_text().startswith(f"$ train.py --resume {cell}")
    assert (cell / "checkpoints" / "after_2_breakout.pt").is_file()
    assert untouched.stat().st_mtime_ns == mtime
    # Pong, which had finished, is not trained again; the cell is evaluated again from its new end
    assert finished.stat().st_mtime_ns == finished_mtime and finished.read_bytes() == finished_bytes
    assert evaluated.stat().st_mtime_ns != evaluated_mtime
    report = json.loads(evaluated.read_text())
    assert [row["checkpoint"] for row in report["rows"]] == ["after_1_pong.pt", "after_2_breakout.pt"]


# ---- cells sharing a GPU, and the sweep's throughput ----


def test_a_cells_reservation_and_how_many_run_at_once():
    host = {"CPU": 16.0, "GPU": 1.0}
    assert cell_reservation(host, 0.25, 2) == (0.25, 4)  # four cells share the GPU
    assert cell_reservation(host, 0.25, 8) == (0.25, 2)  # the CPUs run out first
    assert cell_reservation(host, 0.3, 1) == (0.3, 3)
    assert cell_reservation(host, None, 1) == (1.0, 1)  # by default a cell takes a whole GPU
    assert cell_reservation({"CPU": 2.0}, None, 1) == (0.0, 2)  # ... and none where there is none
    assert cell_reservation({"CPU": 16.0, "GPU": 2.0}, 2, 1) == (2, 1)
    assert cell_reservation(host, 0.0, 1) == (0.0, 16)  # CPU-only cells on a GPU host: one per core
    assert parse_cell_resources(None, "1", "cpu") == (0.0, 1)  # --device cpu reserves no GPU by default
    assert parse_cell_resources(None, "2", "cuda") == (None, 2) and parse_cell_resources("0", "1") == (0.0, 1)
    with pytest.raises(SweepError, match="asks for 0.5 GPUs .* has 0"):
        cell_reservation({"CPU": 2.0}, 0.5, 1)
    with pytest.raises(SweepError, match="asks for 4 CPUs .* has 2"):
        cell_reservation({"CPU": 2.0, "GPU": 1.0}, 0.5, 4)


def test_agent_steps_per_second_counts_only_the_points_logged_while_learning(tmp_path):
    """Two games of 1,000 steps, learning from step 200 of each, a point every 100 steps: the
    points at steps 300..1000 of each game count (their whole interval is after learning starts)."""
    from torch.utils.tensorboard import SummaryWriter

    config = build_config(None, ["run.steps_per_game=1000", "agent.learning_starts=200", "run.log_every=100"])
    (tmp_path / "config.yaml").write_text(json.dumps(config.to_dict()))  # JSON is YAML
    writer = SummaryWriter(str(tmp_path))
    speeds = {step: float(step % 1000 or 1000) + (5000 if step > 1000 else 0) for step in range(100, 2001, 100)}
    for step, speed in speeds.items():
        writer.add_scalar("charts/SPS", speed, step)
    writer.close()
    counted = [speed for step, speed in speeds.items() if (step - 1) % 1000 + 1 >= 300]
    assert len(counted) == 16
    assert agent_steps_per_second(tmp_path) == pytest.approx(sum(counted) / len(counted))
    assert math.isnan(agent_steps_per_second(tmp_path / "missing"))


ONE_GAME = [
    "--games",
    "pong",
    "--config",
    "configs/smoke.yaml",
    "--set",
    "run.steps_per_game=128",
    "--set",
    "agent.learning_starts=64",
    "--set",
    "run.log_every=32",
    "--set",
    "eval.episodes=1",
    "--set",
    "eval.max_episode_frames=200",
]
DECLARED_GPU = """
import sys

import ray

import sweep

start = ray.init
ray.init = lambda **options: start(**options, num_gpus=1, num_cpus=3)  # a GPU host, as Ray sees one
sys.exit(sweep.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_cells_share_a_declared_gpu_as_their_fraction_allows(tmp_path):
    """One declared GPU, half a GPU a cell, three cells and CPUs for three: two train at once, the
    third once one of them is done. Each cell runs on the CPU (--device cpu), so no GPU is needed."""
    where = tmp_path / "shared"
    arguments = [*ONE_GAME, "--methods", "finetune", "--seeds", "0,1,2", "--device", "cpu", "--sweep-dir", str(where)]
    result = subprocess.run(
        [sys.executable, "-c", DECLARED_GPU, *arguments, "--gpus-per-cell", "0.5", "--cpus-per-cell", "1"],
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 GPUs; each cell takes 1 CPU(s) and 0.5 GPU(s): up to 2 cells at once" in result.stderr
    cells = sorted((where / "cells").iterdir())
    assert len(cells) == 3
    # Each cell's span, from the files its own scripts wrote: train.py's config.yaml (at its start)
    # to evaluate.py's eval.json (at its end).
    spans = [((cell / "config.yaml").stat().st_mtime, (cell / "eval" / "eval.json").stat().st_mtime) for cell in cells]
    at_once = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert at_once == 2, spans
    for cell in cells:
        command = (where / "logs" / f"{cell.name}.log").read_text().splitlines()[0]
        assert command.startswith("$ train.py --games pong") and "--device cpu" in command
        assert yaml.safe_load((cell / "config.yaml").read_text())["run"]["device"] == "cpu"

    rows = list(csv.DictReader((where / "cells.csv").open()))
    speeds = [agent_steps_per_second(Path(row["run_dir"])) for row in rows]
    assert all(speed > 0 for speed in speeds)
    assert [float(row["agent_steps_per_s"]) for row in rows] == pytest.approx(speeds, abs=0.05)
    report = (where / "report.md").read_text()
    assert f"summed over the 3 cells that logged it: **{sum(speeds):,.0f}**" in report


def test_a_modulated_method_is_the_method_with_per_game_biases_and_gains_in_cells_of_its_own(tmp_path, monkeypatch):
    """`ewc-modulated` trains `--method ewc` with network.per_game_modulation on, in cells named for it
    beside the plain method's; its fine-tuning twin takes no lambda."""
    monkeypatch.chdir(ROOT)
    args = sweep.parse_args([*TINY, "--methods", "ewc,ewc-modulated,finetune-modulated", "--ewc-lambda", "100"])
    args.sweep_dir = str(tmp_path / "s")
    _, planned = plan_sweep(args)
    by_method = {planned_cell.cell.method: planned_cell for planned_cell in planned}
    assert set(by_method) == {"ewc", "ewc-modulated", "finetune-modulated"}
    assert by_method["ewc-modulated"].cell.name == "pong-breakout-ewc-modulated-lambda100-s0"
    assert by_method["finetune-modulated"].cell.ewc_lambda is None
    train = by_method["ewc-modulated"].commands[0]
    assert train[train.index("--method") + 1] == "ewc" and "network.per_game_modulation=true" in train
    assert "network.per_game_modulation=true" not in by_method["ewc"].commands[0]


def test_a_plain_method_under_a_preset_with_modulation_is_named_modulated(tmp_path, monkeypatch):
    """The paper preset turns per-game biases and gains on: its `ewc` cells are `ewc-modulated` cells
    (asked for as either, planned once), so that names and reports say what they train."""
    monkeypatch.chdir(ROOT)
    args = sweep.parse_args(
        [*TINY, "--config", "configs/paper.yaml", "--methods", "ewc,ewc-modulated", "--ewc-lambda", "100", "--seeds", "0"]
    )
    args.sweep_dir = str(tmp_path / "s")
    _, planned = plan_sweep(args)
    assert [planned_cell.cell.name for planned_cell in planned] == ["pong-breakout-ewc-modulated-lambda100-s0"]


# ---- cells packed into one process ----


def planned_cell(tmp_path: Path, method: str, seed: int, state: str = NEW, order=("pong", "breakout")) -> PlannedCell:
    cell = Cell(order, method, 100.0, seed)
    run = tmp_path / cell.name
    arguments = ["--games", ",".join(order), "--method", method, "--seed", str(seed)]
    return PlannedCell(cell, run, tmp_path / f"{cell.name}.log", state, cell_commands(state, run, arguments, build_config(None)))


def test_cells_are_packed_only_with_cells_that_can_step_together(tmp_path):
    planned = [
        *(planned_cell(tmp_path, "ewc", seed) for seed in range(3)),
        planned_cell(tmp_path, "finetune", 0),
        planned_cell(tmp_path, "ewc-modulated", 0),  # another network: its own process
        planned_cell(tmp_path, "ewc+replay", 0),  # rehearsal trains alone
        planned_cell(tmp_path, "ewc", 9, INTERRUPTED),  # resumed at its own position
        planned_cell(tmp_path, "ewc", 8, TRAINED),  # only its evaluation
        planned_cell(tmp_path, "ewc", 7, order=("breakout", "pong")),
        planned_cell(tmp_path, "ewc", 6, EVALUATED),  # nothing to run
    ]
    tasks = pack_cells(planned, cells_per_process=3)
    members = sorted([cell.cell.name for cell in task.cells] for task in tasks)
    assert members == sorted(
        [
            ["pong-breakout-ewc-lambda100-s0", "pong-breakout-ewc-lambda100-s1", "pong-breakout-ewc-lambda100-s2"],
            ["pong-breakout-finetune-lambda100-s0"],
            ["pong-breakout-ewc-modulated-lambda100-s0"],
            ["pong-breakout-ewc+replay-lambda100-s0"],
            ["pong-breakout-ewc-lambda100-s9"],
            ["pong-breakout-ewc-lambda100-s8"],
            ["breakout-pong-ewc-lambda100-s7"],
        ]
    )
    packed = next(task for task in tasks if len(task.cells) == 3)
    train, *evaluations = packed.commands
    assert train[0] == "train.py" and train[1::2] == ["--cell"] * 3
    assert [shlex.split(argument) for argument in train[2::2]] == [cell.commands[0][1:] for cell in planned[:3]]
    assert evaluations == [cell.commands[1] for cell in planned[:3]] and packed.log == planned[0].log
    assert pack_cells(planned, cells_per_process=1) == [
        Task([cell], cell.commands, cell.log) for cell in planned if cell.commands
    ]


@pytest.mark.slow
def test_a_packed_sweep_trains_its_cells_in_one_process_and_reports_them_as_ever(tiny_sweep, tmp_path):
    where = tmp_path / "packed"
    result = run_sweep(*TINY, *GRID, "--sweep-dir", str(where), "--cells-per-process", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "each process (4 cells at most) takes 1 CPU(s)" in result.stderr
    for name in CELLS:
        log = (where / "logs" / f"{name}.log").read_text()
        assert log.startswith("$ train.py --cell") and "training 4 cells in one process" in log
        assert (where / "cells" / name / "eval" / "eval.json").is_file()
    rows = {row["cell"]: row for row in csv.DictReader((where / "cells.csv").open())}
    assert sorted(rows) == CELLS and {row["status"] for row in rows.values()} == {"evaluated"}
    alone = {row["cell"]: row for row in csv.DictReader((tiny_sweep[0] / "cells.csv").open())}
    assert [rows[name]["seed"] for name in CELLS] == [alone[name]["seed"] for name in CELLS]


def test_a_packed_process_runs_every_command_after_a_failure_and_returns_it(tmp_path):
    """One packed cell's failure (a divergence: train.py exits 1) must not keep the others from their
    evaluations: the commands after it still run, and the task reports the first failure."""
    log = tmp_path / "task.log"
    commands = [["-c", "import sys; sys.exit(3)"], ["-c", "print('evaluated')"]]
    assert run_cell(commands, str(ROOT), str(log), keep_going=True)[0] == 3
    assert "evaluated" in log.read_text()
    assert run_cell(commands, str(ROOT), str(log))[0] == 3
    assert "evaluated" not in log.read_text()  # one cell alone stops at its first failure, as before
