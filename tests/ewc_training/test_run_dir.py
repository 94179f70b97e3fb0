"""A run directory has one writer: a lock held for the life of the process, gone when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ewc_training.config import Config
from ewc_training.run_dir import (
    RunInUseError,
    lock_run_dir,
    record_replay_refilled,
    replay_refills,
    unlock_run_dir,
    write_json,
    write_run_files,
)
from tests.conftest import ROOT, SUBPROCESS_ENV, run_train

HOLD = (
    "import sys, time; from pathlib import Path; from ewc_training.run_dir import lock_run_dir; "
    "lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)"
)


def hold_lock_in_another_process(run_dir) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_one_leaves_no_stale_lock(tmp_path):
    holder = hold_lock_in_another_process(tmp_path)
    try:
        with pytest.raises(RunInUseError, match="being written by another process"):
            lock_run_dir(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_run_dir(tmp_path)  # the kernel released the dead holder's lock
    unlock_run_dir(tmp_path)


def test_run_json_is_replaced_whole(tmp_path):
    path = tmp_path / "run.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


@pytest.mark.parametrize("threads", [1, 2])
def test_run_json_records_the_torch_threads_results_depend_on(tmp_path, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        write_run_files(tmp_path, Config(), torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "run.json").read_text())["torch_threads"] == threads


def test_the_lock_writes_nothing_into_the_run(tmp_path):
    lock_run_dir(tmp_path)
    try:
        assert list(tmp_path.iterdir()) == []
    finally:
        unlock_run_dir(tmp_path)


@pytest.mark.slow
def test_training_into_a_run_that_is_being_written_is_refused(tmp_path):
    """A second train.py on a run directory another process is writing gets one line and status 2,
    and the first run's files are untouched."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "train.py", "--config", "configs/smoke.yaml", "--games", "pong", "--run-dir", str(run_dir)],
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.yaml").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        for args in (["--resume", str(run_dir)], ["--games", "pong", "--run-dir", str(run_dir), "--overwrite"]):
            second = run_train(*args)
            assert second.returncode == 2
            lines = second.stderr.strip().splitlines()
            assert lines[-1].startswith("error: ") and "being written by another process" in lines[-1]
            assert "Traceback" not in second.stderr
        assert (run_dir / "config.yaml").is_file()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)


def test_run_json_names_the_machine_for_result_pages(tmp_path):
    write_run_files(tmp_path, Config(), torch.device("cpu"))
    machine = json.loads((tmp_path / "run.json").read_text())["machine"]
    assert machine.endswith(f", {os.cpu_count()} cores") and len(machine) > len(", 1 cores")


def test_replay_refills_name_every_refill_a_later_resume_did_not_train_over(tmp_path):
    """Two refills are both named; a resume from at or before a refill's position (e.g. --resume
    after_1_<game>.pt) trains that stretch again, so that refill no longer describes the run."""
    (tmp_path / "run.json").write_text(json.dumps({"resumed": [{"total_steps": 1_500}]}))
    record_replay_refilled(tmp_path, "pong", 500)
    resumes = json.loads((tmp_path / "run.json").read_text())["resumed"]
    assert resumes == [{"total_steps": 1_500, "replay_refilled": {"game": "pong", "step_in_game": 500}}]
    later = {"total_steps": 2_700, "replay_refilled": {"game": "breakout", "step_in_game": 700}}
    assert replay_refills({"resumed": [*resumes, later]}) == "pong at step 500; breakout at step 700"
    assert replay_refills({"resumed": [*resumes, later, {"total_steps": 2_700}]}) == "pong at step 500"
    assert replay_refills({"resumed": [*resumes, later, {"total_steps": 1_000}]}) == ""
    assert replay_refills({"git_commit": "abc"}) == "" and replay_refills([]) == ""
