"""Reliability through the real command line: bad input, SIGINT, SIGKILL, resume, divergence.

Every run here is a real `python train.py` subprocess on real ALE emulators, made small with
`--set`: two games of 400 agent steps on 4 emulators, logged every 200 steps.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.replay import FrameReplay
from ewc_training.checkpoint import FORMAT, load_checkpoint
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.run_dir import replay_checkpoint, resume_point
from ewc_training.schedule import replay_capacity
from ewc_training.schema import Position, restore_replay
from ewc_training.trainer import SequenceTrainer
from tests.conftest import ROOT, SUBPROCESS_ENV, run_train
from tests.ewc_training.test_checkpoint import _CreatesFile

STEPS = 400
SMALL = [
    "--config",
    "configs/smoke.yaml",
    "--device",
    "cpu",
    "--set",
    f"run.steps_per_game={STEPS}",
    "--set",
    "agent.learning_starts=200",
    "--set",
    "run.log_every=200",
    "--set",
    "consolidation.fisher_samples=32",
]
UPDATES_PER_GAME = (STEPS - 200) // 4  # one per 4 steps after step 200, the last vector step included


def start_training(run_dir: Path, *args: str, settings: list[str] = SMALL) -> subprocess.Popen:
    """`python train.py` as `run_train` runs it (`settings` first), but in the background; stderr (tqdm
    included) goes to <run_dir>.stderr, never a pipe that could fill up."""
    log = (run_dir.parent / f"{run_dir.name}.stderr").open("w")
    return subprocess.Popen(
        [sys.executable, "train.py", *settings, *args, "--run-dir", str(run_dir)],
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        stderr=log,
        stdout=subprocess.DEVNULL,
    )


def stderr_of(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.stderr").read_text()


def wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"training ended early (exit {process.returncode})"
        assert time.monotonic() < deadline, "timed out waiting for the training subprocess"
        time.sleep(0.005)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, after_training: bool = False) -> None:
    """Non-zero exit, no traceback, and stderr is one `error:` line (its last line, once training ran)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (after_training or len(lines) == 1) and lines[-1].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file below `folder`: what 'nothing was overwritten' compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same(a, b, where: str = "state") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


# --- bad input: one line, non-zero exit, no traceback, nothing written --------------------------

BAD_INPUTS = {
    # case: (arguments, fragments of the error line); {folder} is the case's own empty folder
    "unknown game": (["--games", "pong,brekout"], ["unknown game 'brekout'", "breakout"]),
    "empty game list": (["--games", " , "], ["game list is empty"]),
    "zero steps": (["--set", "run.steps_per_game=0"], ["run.steps_per_game must be positive"]),
    "unknown key": (["--set", "agent.learnig_rate=1e-3"], ["agent.learnig_rate", "did you mean 'agent.learning_rate'"]),
    "yaml that does not parse": (["--config", "{folder}/broken.yaml"], ["is not valid YAML (line 3)"]),
    "unknown key in yaml": (["--config", "{folder}/typo.yaml"], ["'agent.learning_rat'", "did you mean 'agent.learning_rate'"]),
    "replay too large": (
        ["--set", "run.steps_per_game=2000000000", "--set", "agent.replay_capacity=2000000000"],
        ["needs 14128.0 GB", "set agent.replay_capacity="],
    ),
    "unwritable run dir": (["--run-dir", "{folder}/a-file/run"], ["cannot write to run directory", "Not a directory"]),
    "resume of a missing run": (["--resume", "{folder}/nope"], ["not a run directory"]),
}
if not torch.cuda.is_available():
    BAD_INPUTS["cuda without cuda"] = (["--device", "cuda"], ["PyTorch sees no CUDA GPU"])


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every BAD_INPUTS case through the real command line, two at a time (each is mostly the
    two seconds of importing torch), in its own folder holding the files the cases point at."""

    def run(case: str) -> tuple[Path, subprocess.CompletedProcess]:
        folder = tmp_path_factory.mktemp("bad-input")
        (folder / "broken.yaml").write_text("run:\n  games: [pong\n")
        (folder / "typo.yaml").write_text("agent:\n  learning_rat: 0.001\n")
        (folder / "a-file").write_text("")
        args = [arg.format(folder=folder) for arg in BAD_INPUTS[case][0]]
        new_run = [] if "--resume" in args else [*SMALL, "--run-dir", str(folder / "run")]
        return folder, run_train(*new_run, *args)  # a later --run-dir or --device wins

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(BAD_INPUTS, pool.map(run, BAD_INPUTS)))


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_error_and_writes_nothing(case, bad_input_results):
    folder, result = bad_input_results[case]
    assert_one_line_error(result, *BAD_INPUTS[case][1])
    assert sorted(p.name for p in folder.iterdir()) == ["a-file", "broken.yaml", "typo.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_steps_flag_must_be_a_positive_number(value, tmp_path):
    """One line, no usage before it: the usage would bury what was wrong."""
    result = run_train("--steps-per-game", value, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "usage:" not in result.stderr
    assert result.stderr.strip() == f"error: argument --steps-per-game: must be a positive whole number, got '{value}'"


@pytest.mark.slow
@pytest.mark.parametrize("arguments", [["--ewc-lambda", "strong"], ["--method", "ewk"], ["--no-such-flag"]])
def test_bad_flags_are_one_line_without_the_usage(arguments, tmp_path):
    result = run_train(*arguments, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "usage:" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


@pytest.mark.slow
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_run_dir(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    result = run_train(*SMALL, "--run-dir", str(folder / "run"))
    assert_one_line_error(result, "cannot write to run directory", "Permission denied")


@pytest.mark.slow
def test_existing_run_dir_is_refused_without_resume_or_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("run: {}\n")
    before = tree(run_dir)
    result = run_train(*SMALL, "--run-dir", str(run_dir))
    assert_one_line_error(result, "already exists", f"--resume {run_dir}", "--overwrite")
    assert tree(run_dir) == before


@pytest.mark.slow
def test_overwrite_deletes_only_run_directories(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("years of work")
    result = run_train(*SMALL, "--run-dir", str(folder), "--overwrite")
    assert_one_line_error(result, "not a run directory")
    assert (folder / "chapter1.tex").read_text() == "years of work"


@pytest.mark.slow
def test_resume_refuses_options_that_change_the_run(tmp_path):
    result = run_train("--resume", str(tmp_path), "--games", "pong", "--set", "agent.gamma=0.9")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("drop --games, --set")


# --- SIGINT, then resume -------------------------------------------------------------------------


@dataclass
class Interrupted:
    run_dir: Path  # stopped by SIGINT; the resume test continues it
    snapshot: Path  # a copy taken right after the stop, never run again
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Interrupted:
    """A run with `--save-replay` stopped by SIGINT in its second game, after learning began there.

    latest.pt is first written at total step 640 (breakout step 240); SIGINT is sent then.
    """
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    process = start_training(run_dir, "--save-replay", "--set", "run.checkpoint_every=640")
    wait_for((run_dir / "checkpoints" / "latest.pt").exists, process)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    snapshot = run_dir.parent / "snapshot"
    shutil.copytree(run_dir, snapshot)
    return Interrupted(run_dir, snapshot, process.returncode, stderr_of(run_dir))


@pytest.mark.slow
def test_sigint_writes_a_resumable_checkpoint(interrupted):
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert "pong: learning starts at step 200: the replay holds " in interrupted.stderr  # agent.learning_starts
    assert "finished all" not in interrupted.stderr
    assert f"resume with: python train.py --resume {interrupted.run_dir}" in interrupted.stderr
    checkpoints = interrupted.snapshot / "checkpoints"
    position = load_checkpoint(checkpoints / "latest.pt")["position"]
    assert position["game_index"] == 1 and 640 - STEPS <= position["step_in_game"] < STEPS
    assert position["updates_in_game"] > 0
    assert load_checkpoint(checkpoints / "latest_replay.pt", mmap=True)["position"] == position


@pytest.mark.slow
def test_resume_restores_the_exact_state(interrupted):
    """Learner, optimizer, counters, generators, probes and the consolidation penalty come back."""
    run_dir = interrupted.snapshot
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    saved = load_checkpoint(checkpoint)
    config = build_config(run_dir / "config.yaml")
    trainer = SequenceTrainer.resume(config, run_dir, torch.device("cpu"), MemoryLogger(), checkpoint)

    restored = trainer.get_state()
    for key in ("format", "git_commit"):
        saved.pop(key), restored.pop(key, None)
    assert_same(restored, saved)

    # The penalty the resumed learner adds equals sum_g (lambda/2) sum_i F_g,i (theta_i - theta*_g,i)^2
    # computed directly from the saved Fisher and anchors (not from the folded quadratic).
    theta = trainer.learner.online.shared_parameters()
    explicit = 0.0
    for term in saved["consolidation"]["per_game"].values():
        for name, fisher in term["fisher"].items():
            explicit += float((fisher.double() * (theta[name].detach().double() - term["anchor"][name].double()).square()).sum())
    explicit *= config.consolidation.ewc_lambda / 2
    assert explicit > 0
    assert trainer.learner.consolidation.penalty(trainer.learner.online).item() == pytest.approx(explicit, rel=1e-4)

    replay = FrameReplay(replay_capacity(config.agent, config.run.steps_per_game, config.env.num_envs), config.env.num_envs)
    assert restore_replay(replay_checkpoint(run_dir), trainer.position, replay)
    assert_same(replay.get_state(), load_checkpoint(run_dir / "checkpoints" / "latest_replay.pt")["replay"])


@pytest.mark.slow
def test_printed_resume_command_finishes_the_sequence(interrupted):
    command = shlex.split(interrupted.stderr.rsplit("resume with: ", 1)[1].strip())
    assert command[0] == "python"
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "warning: no replay saved" not in result.stderr  # the saved replay was used
    assert "breakout: learning resumes at step " in result.stderr
    closing = result.stderr.strip().splitlines()[-1]
    assert closing.startswith(f"finished all 2 games; the run is in {interrupted.run_dir}; score it with: python evaluate.py ")

    final = load_checkpoint(interrupted.run_dir / "checkpoints" / "after_2_breakout.pt")
    assert final["position"]["total_steps"] == 2 * STEPS
    assert final["learner"]["updates"] == 2 * UPDATES_PER_GAME  # as many as without the stop
    steps = scalar_steps(interrupted.run_dir)
    assert steps["charts/SPS"] == [200, 400, 600, 800]
    assert all(len(set(s)) == len(s) for s in steps.values())
    resumes = json.loads((interrupted.run_dir / "run.json").read_text())["resumed"]
    assert [entry["command"][1:] for entry in resumes] == [command[2:]]

    again = run_train("--resume", str(interrupted.run_dir))
    assert again.returncode == 0 and "has finished all 2 games; nothing to resume" in again.stderr

    score = shlex.split(closing.rsplit("score it with: ", 1)[1])
    assert score[:2] == ["python", "evaluate.py"]
    scored = subprocess.run(
        [sys.executable, *score[1:]], cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300
    )
    assert scored.returncode == 0, scored.stderr
    assert "1 episode per cell (run config)" in scored.stderr  # configs/smoke.yaml's eval section
    assert "episodes cut at 2,000 frames (run config)" in scored.stderr


def test_replay_restart_never_joins_episodes_across_a_resume():
    """After `add_restart` the last saved observation has no transition and new stacks start clean."""

    def frames(value: int) -> torch.Tensor:
        return torch.full((2, 4, 84, 84), value, dtype=torch.uint8)

    replay = FrameReplay(capacity=64, num_envs=2)
    no = torch.zeros(2, dtype=torch.bool)
    replay.add_first(frames(1))
    for value in (2, 3, 4):
        replay.add(torch.ones(2, dtype=torch.long), torch.ones(2), no, no, frames(value))
    replay.add_restart(frames(9))
    replay.add(torch.ones(2, dtype=torch.long), torch.ones(2), no, no, frames(10))
    assert replay.has_transition[:, :5].tolist() == [[True, True, True, False, True]] * 2
    stack = replay.gather(torch.tensor([0]), torch.tensor([4])).s_tm1[0, :, 0, 0].tolist()
    assert stack == [0, 0, 0, 9]  # the reset observation, with no frame of the old episode
    _, t = replay.sample_indices(256)
    assert not (t == 3).any()  # the observation saved last is never a transition's start


def test_resume_picks_the_newest_checkpoint_by_position(tmp_path):
    """A game-end checkpoint written after the last latest.pt is the newer one, whatever the names."""
    config = build_config(ROOT / "configs" / "smoke.yaml")
    trainer = SequenceTrainer(config, tmp_path, torch.device("cpu"), MemoryLogger())
    (tmp_path / "config.yaml").write_text("")
    checkpoints = tmp_path / "checkpoints"

    def save(name: str, game_index: int, step_in_game: int) -> Path:
        trainer.position = Position(game_index, step_in_game, game_index * 2000 + step_in_game)
        trainer.save(checkpoints / name)
        return checkpoints / name

    latest, game_end = save("latest.pt", 0, 1200), save("after_1_pong.pt", 1, 0)
    assert resume_point(tmp_path) == (tmp_path, game_end)
    save("latest.pt", 1, 400)
    assert resume_point(tmp_path) == (tmp_path, latest)
    assert resume_point(game_end) == (tmp_path, game_end)  # an older one, asked for by name


@pytest.mark.slow
def test_resume_from_an_older_checkpoint_hides_the_later_curves(interrupted, tmp_path):
    """TensorBoard shows each step once: what the first process logged after after_1 is purged."""
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted.snapshot, run_dir)
    assert 600 in scalar_steps(run_dir)["charts/SPS"]  # logged in breakout before the stop
    result = run_train("--resume", str(run_dir / "checkpoints" / "after_1_pong.pt"))
    assert result.returncode == 0, result.stderr
    steps = scalar_steps(run_dir)
    assert steps["charts/SPS"] == [200, 400, 600, 800]
    assert all(len(set(s)) == len(s) for s in steps.values())
    final = load_checkpoint(run_dir / "checkpoints" / "after_2_breakout.pt")
    assert final["learner"]["updates"] == 2 * UPDATES_PER_GAME


# --- damaged or foreign checkpoints on --resume ---------------------------------------------------


def truncate(path: Path, tmp: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_bytes(path: Path, tmp: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(data)


def replace_with_text(path: Path, tmp: Path) -> None:
    path.write_text("these are not the weights you are looking for\n")


def replace_with_code(path: Path, tmp: Path) -> None:
    torch.save(
        {"format": FORMAT, "position": {"game_index": 9, "step_in_game": 0}, "x": _CreatesFile(tmp / "created-by-payload")}, path
    )


def replace_with_other_network(path: Path, tmp: Path) -> None:
    config = build_config(path.parent.parent / "config.yaml", ["network.architecture=large"])
    SequenceTrainer(config, tmp, torch.device("cpu"), MemoryLogger()).save(path)


DAMAGE = {
    "truncated": (truncate, "not a whole torch.save archive"),
    "not a checkpoint": (replace_with_text, "not a whole torch.save archive"),
    "corrupt": (flip_bytes, "fails its CRC check"),
    "code": (replace_with_code, "could run code"),
    "other network": (replace_with_other_network, "another shape (layers.2.weight: (128, 64, 3, 3)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoint_is_refused_on_resume(damage, interrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted.snapshot, run_dir)
    latest = run_dir / "checkpoints" / "latest.pt"
    spoil, message = DAMAGE[damage]
    spoil(latest, tmp_path)
    before = tree(run_dir)
    target = latest if damage == "other network" else run_dir  # its position (0, 0) is not the newest
    result = run_train("--resume", str(target))
    assert_one_line_error(result, str(latest), message)
    assert tree(run_dir) == before
    assert not (tmp_path / "created-by-payload").exists()


# --- SIGKILL in the middle of a checkpoint write ---------------------------------------------------


@pytest.mark.slow
def test_sigkill_while_writing_checkpoints_then_resume_to_the_end(tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    process = start_training(run_dir, "--set", "run.checkpoint_every=100")

    def rewriting_latest_in_game_two() -> bool:  # the write at total step 600 (breakout step 200)
        game_one_end, latest = checkpoints / "after_1_pong.pt", checkpoints / "latest.pt"
        return (
            game_one_end.exists()
            and latest.stat().st_mtime_ns > game_one_end.stat().st_mtime_ns
            and any(checkpoints.glob(".latest.pt.*.tmp"))
        )

    wait_for(rewriting_latest_in_game_two, process)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert list(checkpoints.glob(".latest.pt.*.tmp")), "the kill should land in the middle of a write"
    assert load_checkpoint(checkpoints / "latest.pt")["position"]["game_index"] == 1  # whole, CRCs pass

    result = run_train("--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "refills it from step" in result.stderr  # no --save-replay: the replay starts again
    assert not list(checkpoints.glob(".*.tmp"))
    for index, name in ((1, "after_1_pong.pt"), (2, "after_2_breakout.pt")):
        position = load_checkpoint(checkpoints / name)["position"]
        assert (position["game_index"], position["step_in_game"], position["total_steps"]) == (index, 0, index * STEPS)
    assert all(len(set(s)) == len(s) for s in scalar_steps(run_dir).values())


# --- divergence ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_nan_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        *SMALL, "--set", "agent.learning_rate=1e30", "--set", "run.checkpoint_every=100", "--run-dir", str(run_dir)
    )
    assert_one_line_error(result, "became NaN or infinite on pong by step", "are from before it", after_training=True)
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert latest["position"]["step_in_game"] < int(result.stderr.split("by step ")[1].split(";")[0].replace(",", ""))
    assert all(torch.isfinite(weights).all() for weights in latest["learner"]["online"].values())
