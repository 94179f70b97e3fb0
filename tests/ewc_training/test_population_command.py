"""Many cells from the real command line: `train.py --method ewc,finetune --seeds 0-1` trains four ordinary
runs in one process; Ctrl-C and kill -9 leave every cell resumable with one `--resume` command; bad
input is one line before anything is written.

Real `python train.py` subprocesses on real MinAtar games, two games of 400 agent steps each.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
from pathlib import Path

import pytest

from ewc_training.config import build_config
from ewc_training.run_dir import game_end_checkpoint, latest_checkpoint
from tests.conftest import run_train
from tests.ewc_training.test_reliability import assert_one_line_error, scalar_steps, start_training, wait_for

GAMES = ["minatar:breakout", "minatar:space_invaders"]
SMALL = [
    "--config",
    "configs/minatar.yaml",
    "--games",
    ",".join(GAMES),
    "--device",
    "cpu",
    "--steps-per-game",
    "400",
    "--set",
    "env.num_envs=4",
    "--set",
    "agent.learning_starts=200",
    "--set",
    "run.log_every=100",
    "--set",
    "run.checkpoint_every=200",
    "--set",
    "eval.eval_every=0",
    "--set",
    "consolidation.fisher_samples=32",
    "--set",
    "consolidation.probe_states=8",
    "--save-replay",
]


def cell_dirs(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_dir())


def finished(run_dir: Path) -> bool:
    return game_end_checkpoint(run_dir, 2, GAMES[-1]).is_file()


@pytest.mark.slow
def test_methods_times_seeds_train_as_ordinary_runs_in_one_process(tmp_path):
    result = run_train(*SMALL, "--method", "ewc,finetune", "--seeds", "0-1", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "training 4 cells in one process" in result.stderr
    runs = cell_dirs(tmp_path)
    assert len(runs) == 4 and all(finished(run) for run in runs)
    configs = [build_config(run / "config.yaml") for run in runs]
    for run in runs:
        (population,) = json.loads((run / "run.json").read_text())["populations"]
        assert population == {"total_steps": 0, "cells": [str(other) for other in runs]}
    assert sorted((config.consolidation.method, config.run.seed) for config in configs) == [
        ("ewc", 0),
        ("ewc", 1),
        ("finetune", 0),
        ("finetune", 1),
    ]
    for run in runs:
        assert f"the run is in {run}; score it with: " in result.stderr
        steps = scalar_steps(run)
        assert steps[f"charts/{GAMES[0]}/episodic_return"] and steps[f"losses/{GAMES[1]}/td_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_a_stopped_population_resumes_every_cell_with_one_command(how, tmp_path):
    folder = tmp_path / "cells"
    process = start_training(folder, "--method", "ewc,finetune", "--seeds", "3", settings=SMALL)
    wait_for(
        lambda: (
            folder.is_dir() and len(cell_dirs(folder)) == 2 and all(latest_checkpoint(run).is_file() for run in cell_dirs(folder))
        ),
        process,
    )
    process.send_signal(getattr(signal, how))
    status = process.wait(timeout=120)
    stderr = (tmp_path / "cells.stderr").read_text()
    runs = cell_dirs(folder)
    assert len(runs) == 2 and not any(finished(run) for run in runs)
    if how == "SIGINT":
        assert status == 130, stderr
        (command,) = re.findall(r"resume with: (python .*)", stderr)
        arguments = shlex.split(command)[2:]
        assert arguments == ["--resume", *map(str, sorted(runs, key=lambda run: "finetune" in run.name))]
    else:
        assert status == -signal.SIGKILL
        arguments = ["--resume", *map(str, runs)]
    resumed = run_train(*arguments)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("resuming from") == 2
    assert all(finished(run) for run in runs)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--seed", "1", "--seeds", "0-3"], "give --seed or --seeds, not both"),
        (["--seeds", "3-1"], "runs backwards"),
        (["--seeds", "a-b"], "must be seeds such as 0-3"),
        (["--method", "ewc,ewk"], "unknown method 'ewk'"),
        (["--seeds", "0-1", "--branch-from", "x.pt"], "a branch keeps its source's seed"),
        (["--cell", ""], "one run's arguments (not empty"),
        (["--cell", "--threads 2"], "no --cell, --list-games or --threads inside"),
        (
            ["--cell", "--method ewc --run-dir {folder}/same", "--cell", "--method finetune --run-dir {folder}/same"],
            "two runs of this command would write to",
        ),
        (["--cell", "--games minatar:breakout --run-dir {folder}/a", "--cell", "--games minatar:nosuch"], "unknown game"),
    ],
)
def test_bad_cell_lists_are_one_line_and_write_nothing(arguments, fragment, tmp_path):
    arguments = [argument.format(folder=tmp_path) for argument in arguments]
    if "--cell" in arguments:  # every run's arguments inside its --cell
        arguments = [
            f"{shlex.join(SMALL)} {argument}" if previous == "--cell" and argument else argument
            for previous, argument in zip(["", *arguments], arguments)
        ]
        result = run_train(*arguments)
    else:
        result = run_train(*SMALL, *arguments, "--run-dir", str(tmp_path / "cells"))
    assert_one_line_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_one_run_named_twice_is_refused(tmp_path):
    run = tmp_path / "run"
    assert run_train(*SMALL, "--steps-per-game", "8", "--run-dir", str(run)).returncode == 0
    before = sorted(path.name for path in run.rglob("*"))
    assert_one_line_error(run_train("--resume", str(run), str(run)), "two runs of this command would write to")
    assert sorted(path.name for path in run.rglob("*")) == before
