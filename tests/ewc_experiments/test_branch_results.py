"""scripts/atari_cpu_experiment.sh end to end at toy size: a real Pong run, EWC and fine-tuning branched
from its end into Breakout, both scored by evaluate.py, and the page built from the saved cells alone."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import pytest

from ewc_experiments.branch_results import load, retention, split
from tests.conftest import ROOT, SUBPROCESS_ENV

TOY = (
    "--steps-per-game 256 --set env.num_envs=4 --set agent.learning_starts=64 --set run.log_every=64 "
    "--set run.checkpoint_every=128 --set eval.eval_every=128 --set eval.episodes=1 --set eval.max_episode_frames=400 "
    "--set consolidation.fisher_samples=32 --set consolidation.probe_states=16"
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("atari-cpu")
    page = folder / "page.md"
    environment = {
        **SUBPROCESS_ENV,
        "TRAIN_OPTIONS": TOY,
        "PONG_STEPS": "256",
        "PAGE": str(page),
        "PYTHON": shutil.which("python") or "python",
    }
    result = subprocess.run(
        ["bash", "scripts/atari_cpu_experiment.sh", str(folder / "runs")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:] + (folder / "runs" / "ewc-s0.log").read_text()[-2000:]
    return folder, page


@pytest.mark.slow
def test_the_branches_start_from_the_pong_run_and_are_scored(experiment):
    folder, _ = experiment
    for method in ("ewc", "finetune"):
        info = json.loads((folder / "runs" / f"{method}-s0" / "run.json").read_text())
        assert info["branched_from"]["games"] == ["pong"] and info["branched_from"]["total_steps"] == 256
        rows = json.loads((folder / "runs" / f"{method}-s0" / "eval" / "eval.json").read_text())["rows"]
        assert [row["games_done"] for row in rows] == [1, 2]
    # both branches score the same Pong network after game 1: same weights, same evaluation seed
    after_one = [
        json.loads((folder / "runs" / f"{method}-s0" / "eval" / "eval.json").read_text())["rows"][0]["cells"]["pong"]["scores"]
        for method in ("ewc", "finetune")
    ]
    assert after_one[0] == after_one[1]


@pytest.mark.slow
def test_the_page_is_built_from_the_saved_cells_with_every_scalar(experiment):
    folder, page = experiment
    shutil.rmtree(folder / "runs")  # the page needs only what export saved
    source, branches = split(load(page))
    assert source.name == "pong-s0" and [cell.method for cell in branches] == ["ewc", "finetune"]
    with open(page.with_suffix("") / "cells" / "ewc-s0" / "scalars.csv", newline="") as handle:
        tags = {row["tag"] for row in csv.DictReader(handle)}
    assert {"eval/pong/score", "eval/breakout/score", "losses/breakout/td_loss"} <= tags
    text = page.read_text()
    assert "One seed: an illustration" in text and "kept of pong's gain over random" in text
    assert (page.with_suffix("") / "curves.png").stat().st_size > 10_000
    before = branches[0].game_end_scores()[1]["pong"]
    after = branches[0].game_end_scores()[2]["pong"]
    assert f"{retention(before, after, 'pong'):.2f}" in text
    assert os.path.basename(str(page.with_suffix(""))) + "/curves.png" in text


def test_retention_is_the_share_of_the_gain_over_random_kept():
    # Pong's random score is -20.7: from -10.7 (10 above random) to -15.7 (5 above) keeps half
    assert retention(-10.7, -15.7, "pong") == pytest.approx(0.5)
    assert retention(-10.7, -20.7, "pong") == pytest.approx(0.0)
    assert retention(-20.7, -15.0, "pong") != retention(-20.7, -15.0, "pong")  # NaN: nothing was gained to keep


def test_the_page_names_each_runs_thread_counts_from_run_json():
    from ewc_experiments.branch_results import BranchCell

    resumed = {"torch_threads": 1, "resumed": [{"total_steps": 416_296, "torch_threads": 2}, {"total_steps": 500_000}]}
    assert BranchCell("pong-s0", resumed, {}, None, {}).threads_text() == "1, 2 from step 416,296"
    assert BranchCell("ewc-s0", {"torch_threads": 1}, {}, None, {}).threads_text() == "1"


def test_the_curve_summary_gives_the_mean_the_share_kept_and_the_first_evaluation_at_random_play():
    from ewc_experiments.branch_results import BranchCell, curve_summary

    # pong -12.7 after game 1 (8 above random -20.7); after the boundary at 1,000: -14.7, -20.0, -16.7
    evaluation = {"rows": [{"games_done": 1, "cells": {"pong": {"scores": [-12.7], "score_mean": -12.7}}}]}
    scalars = {"eval/pong/score": [(500, -15.0, 0.0), (1_100, -14.7, 0.0), (1_200, -20.0, 0.0), (1_300, -16.7, 0.0)]}
    config = {"consolidation": {"method": "ewc", "ewc_lambda": 400.0}, "run": {"games": ["pong", "breakout"]}}
    cell = BranchCell("ewc-s0", {"branched_from": {}}, config, evaluation, scalars)
    assert curve_summary("pong", cell, 1_000) == (
        "- ewc, λ 400: mean of these 3 evaluations -17.1 (45% of the gain over random play after game 1, on average); "
        "first within 1 point of random play (-20.7) 200 steps after the boundary."
    )
