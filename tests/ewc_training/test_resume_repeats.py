"""Resuming is repeatable: one latest.pt resumed twice ends in bit-identical game-end checkpoints.

docs/runs.md: "a resumed game starts new episodes from seeds derived from its step, so resuming the same
checkpoint twice is repeatable", with or without the saved replay. In-process runs of two short
games; latest.pt is written once, in the middle of game 2 after learning began there. Without the
replay, ewc_training/schedule.py's formula says which updates are skipped:

    due(s) = max(0, (s - learning_starts) // steps_per_update) - updates_skipped,
    updates_skipped = step_in_game // steps_per_update - updates_in_game   (at the resume)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ewc_training import run_dir as paths
from ewc_training.checkpoint import load_checkpoint, save_checkpoint
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer
from tests.ewc_training.test_game_boundary import FAMILIES, same_tensors

STEPS = 400
LEARNING_STARTS = 100
STEPS_PER_UPDATE = 4
NUM_ENVS = 4
CHECKPOINT_EVERY = 640  # one latest.pt, at game 2's step 240 (learning began there at step 100)


def config_for(family: str):
    games = FAMILIES[family]
    return build_config(
        "configs/smoke.yaml",
        [
            f"run.games=[{', '.join(games)}]",
            f"run.steps_per_game={STEPS}",
            f"env.num_envs={NUM_ENVS}",
            f"agent.learning_starts={LEARNING_STARTS}",
            f"agent.steps_per_update={STEPS_PER_UPDATE}",
            "agent.batch_size=8",
            "agent.target_update_every=9",
            "agent.epsilon_decay_fraction=1.0",  # exploring to the end: the episodes after the resume depend on the seeds
            "consolidation.method=ewc",
            "consolidation.fisher_samples=16",
            "consolidation.probe_states=8",
            f"run.checkpoint_every={CHECKPOINT_EVERY}",
            "run.log_every=100000",
            "run.save_replay=true",
            "run.device=cpu",
            "network.per_game_modulation=true",
            # MinAtar's space_invaders is deterministic but for sticky actions (its default 0.1):
            # with them a resume that ignored the step's seed would play other episodes
            *(["network.architecture=minatar", "env.sticky_action_prob=0.1"] if family == "minatar" else []),
        ],
    )


@dataclass
class Resumed:
    final: dict  # after_2_<game>.pt
    update_steps: list[int]  # step_in_game of every update the resumed trainer made


def resume(original: Path, where: Path, config, drop_replay: bool = False, replay_position: dict | None = None) -> Resumed:
    """Copy the run, optionally drop its saved replay or move it to another position, resume it to the end."""
    shutil.copytree(original, where)
    replay = paths.replay_checkpoint(where)
    if drop_replay:
        replay.unlink()
    if replay_position is not None:
        saved = load_checkpoint(replay)
        saved.pop("format")
        saved["position"] = replay_position
        save_checkpoint(replay, saved)
    trainer = SequenceTrainer.resume(config, where, torch.device("cpu"), MemoryLogger(), paths.latest_checkpoint(where))
    steps: list[int] = []
    update = trainer.learner.update

    def recording_update(batch, game):
        steps.append(trainer.position.step_in_game)
        return update(batch, game)

    trainer.learner.update = recording_update
    trainer.run()
    final = load_checkpoint(paths.game_end_checkpoint(where, 2, config.run.games[1]))
    final.pop("git_commit")
    return Resumed(final, steps)


def resumes_recorded(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "run.json").read_text())["resumed"]


@pytest.fixture(scope="module", params=["minatar"])
def family_run(request, tmp_path_factory):
    """A finished run whose latest.pt (and replay) were written in the middle of game 2.

    `atari` works too (pong, breakout) and catches the same breaks, at ~80 s instead of ~10 s on
    2 cores; the subprocess resume of tests/ewc_training/test_reliability.py covers Atari's 4-frame
    replay across a resume.
    """
    family = request.param
    config = config_for(family)
    run_dir = tmp_path_factory.mktemp(f"resume-{family}") / "run"
    SequenceTrainer(config, run_dir, torch.device("cpu"), MemoryLogger()).run()
    return family, config, run_dir


@pytest.mark.slow
def test_latest_is_in_game_two_after_learning_began(family_run):
    _, _, run_dir = family_run
    position = load_checkpoint(paths.latest_checkpoint(run_dir))["position"]
    assert position["game_index"] == 1 and position["step_in_game"] == CHECKPOINT_EVERY - STEPS
    assert position["updates_in_game"] > 0
    assert load_checkpoint(paths.replay_checkpoint(run_dir))["position"] == position


@pytest.mark.slow
def test_resuming_twice_with_the_replay_gives_identical_game_end_checkpoints(family_run, tmp_path, capsys):
    _, config, run_dir = family_run
    first = resume(run_dir, tmp_path / "a", config)
    second = resume(run_dir, tmp_path / "b", config)
    assert "no replay saved" not in capsys.readouterr().err
    assert "replay_refilled" not in resumes_recorded(tmp_path / "a")[-1]
    assert same_tensors(first.final, second.final)
    assert first.update_steps == second.update_steps
    # what the comparison covers: weights, optimizer moments, every game's Fisher and anchor
    assert first.final["learner"]["optimizer"]["state"]
    assert set(first.final["consolidation"]["per_game"]) == set(config.run.games)
    # the saved replay is used: learning goes on at once, every update of the schedule is made
    position = load_checkpoint(paths.latest_checkpoint(run_dir))["position"]
    assert first.update_steps[0] == position["step_in_game"]
    assert position["updates_in_game"] + len(first.update_steps) == (STEPS - LEARNING_STARTS) // STEPS_PER_UPDATE


def expected_schedule_without_replay(position: dict) -> list[int]:
    """The steps (of the vector step in flight) at which updates happen, from schedule.py's formula."""
    skipped = position["step_in_game"] // STEPS_PER_UPDATE - position["updates_in_game"]
    made, steps = position["updates_in_game"], []
    for step in range(position["step_in_game"], STEPS, NUM_ENVS):
        due = max(0, (step + NUM_ENVS - LEARNING_STARTS) // STEPS_PER_UPDATE) - skipped
        steps += [step] * max(0, due - made)
        made = max(made, due)
    return steps


@pytest.mark.slow
def test_resuming_twice_without_the_replay_is_identical_and_follows_the_formula(family_run, tmp_path, capsys):
    _, config, run_dir = family_run
    first = resume(run_dir, tmp_path / "a", config, drop_replay=True)
    second = resume(run_dir, tmp_path / "b", config, drop_replay=True)
    assert capsys.readouterr().err.count("no replay saved at this position") == 2
    assert same_tensors(first.final, second.final)
    position = load_checkpoint(paths.latest_checkpoint(run_dir))["position"]
    # run.json says where the replay was refilled, so that result pages can list the cell
    refilled = {"game": config.run.games[1], "step_in_game": position["step_in_game"]}
    assert resumes_recorded(tmp_path / "a")[-1]["replay_refilled"] == refilled
    with_replay = resume(run_dir, tmp_path / "c", config)
    assert not same_tensors(first.final["learner"]["online"], with_replay.final["learner"]["online"])

    expected = expected_schedule_without_replay(position)
    assert first.update_steps == expected
    assert expected and expected[0] == position["step_in_game"] + LEARNING_STARTS  # learning waits learning_starts
    final_updates = first.final["learner"]["updates"]
    game_one_updates = (STEPS - LEARNING_STARTS) // STEPS_PER_UPDATE
    assert final_updates == game_one_updates + position["updates_in_game"] + len(expected)


@pytest.mark.slow
def test_a_replay_saved_at_another_position_is_ignored(family_run, tmp_path, capsys):
    _, config, run_dir = family_run
    position = load_checkpoint(paths.latest_checkpoint(run_dir))["position"]
    elsewhere = {
        **position,
        "step_in_game": position["step_in_game"] - NUM_ENVS,
        "total_steps": position["total_steps"] - NUM_ENVS,
    }
    stale = resume(run_dir, tmp_path / "stale", config, replay_position=elsewhere)
    assert "no replay saved at this position" in capsys.readouterr().err
    without = resume(run_dir, tmp_path / "without", config, drop_replay=True)
    assert same_tensors(stale.final, without.final)
