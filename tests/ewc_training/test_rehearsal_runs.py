"""Runs with replay (`--method replay`, `ewc+replay`): each finished game's memory is saved once, and a
resume or a branch loads it, so both continue exactly as the straight run (one thread, same process)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ewc_training import run_dir as paths
from ewc_training.checkpoint import CheckpointError, load_checkpoint
from ewc_training.launch import start_run
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer
from tests.conftest import run_train
from tests.ewc_training.test_branch import GAMES, branch, final_checkpoint, one_game_source, tiny, train
from tests.ewc_training.test_game_boundary import same_tensors

REVISIT = [GAMES[0], GAMES[1], GAMES[0]]
REPLAY = ["consolidation.method=ewc+replay", "consolidation.replay_per_game=64", "network.per_game_modulation=true"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """breakout -> space_invaders -> breakout with EWC and replay and per-game parameters, on one thread."""
    run_dir = tmp_path_factory.mktemp("rehearsal") / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny(REVISIT, *REPLAY), run_dir)
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.mark.slow
def test_every_finished_game_leaves_its_memory_and_later_batches_rehearse_it(straight):
    for position, game in enumerate(REVISIT, start=1):
        memory = load_checkpoint(paths.rehearsal_memory(straight, position, game))
        assert memory["game"] == game and memory["memory"]["s_tm1"].shape == (64, 10, 10, 10)
    final = final_checkpoint(straight, REVISIT)
    assert "rehearsal_generator" in final["learner"]
    # the second visit of breakout rehearsed space_invaders: its biases and gains moved during it
    before = load_checkpoint(paths.game_end_checkpoint(straight, 2, GAMES[1]))["learner"]["online"]
    name = "modulation.minatar:space_invaders.gains.0"
    assert not torch.equal(before[name], final["learner"]["online"][name])


@pytest.mark.slow
def test_resuming_at_a_game_end_loads_the_memories_and_is_the_straight_run(straight, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    checkpoint = paths.game_end_checkpoint(resumed, 2, GAMES[1])
    SequenceTrainer.resume(tiny(REVISIT, *REPLAY), resumed, torch.device("cpu"), MemoryLogger(), checkpoint).run()
    assert same_tensors(final_checkpoint(straight, REVISIT), final_checkpoint(resumed, REVISIT))


@pytest.mark.slow
def test_a_resume_without_a_memory_file_is_refused_in_one_line(straight, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    paths.rehearsal_memory(resumed, 1, GAMES[0]).unlink()
    checkpoint = paths.game_end_checkpoint(resumed, 2, GAMES[1])
    with pytest.raises(CheckpointError, match=r"rehearsal_1_minatar_breakout\.pt: missing"):
        SequenceTrainer.resume(tiny(REVISIT, *REPLAY), resumed, torch.device("cpu"), MemoryLogger(), checkpoint)


@pytest.mark.slow
def test_a_branch_with_replay_copies_the_memories_and_is_the_straight_run(tmp_path):
    replay = ["consolidation.method=replay", "consolidation.replay_per_game=64"]
    source, straight, branched = tmp_path / "source", tmp_path / "straight", tmp_path / "branched"
    train(tiny(GAMES[:1], *replay), source)
    train(tiny(GAMES, *replay), straight)
    branch(tiny(GAMES, *replay), branched, paths.game_end_checkpoint(source, 1, GAMES[0]))
    assert same_tensors(final_checkpoint(straight, GAMES), final_checkpoint(branched, GAMES))
    copied, kept = paths.rehearsal_memory(branched, 1, GAMES[0]), paths.rehearsal_memory(source, 1, GAMES[0])
    assert copied.read_bytes() == kept.read_bytes()  # the source's file as it is
    assert json.loads((branched / "run.json").read_text())["branched_from"]["method"] == "replay"


@pytest.mark.slow
def test_a_branch_to_replay_from_a_run_without_it_is_refused_before_anything_is_written(tmp_path):
    checkpoint = one_game_source(tmp_path, "consolidation.method=finetune")
    with pytest.raises(CheckpointError, match="missing; a method with replay needs"):
        start_run(tiny(GAMES, "consolidation.method=replay"), str(tmp_path / "b"), overwrite=False, branch_from=str(checkpoint))
    assert not (tmp_path / "b").exists()


def test_a_replay_share_of_one_is_one_error_line(tmp_path):
    result = run_train(
        "--config", "configs/smoke.yaml", "--games", "pong,breakout", "--method", "replay",
        "--set", "consolidation.replay_share=1", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: consolidation.replay_share must be in [0, 1): the current game needs a part"
    ]
    assert not (tmp_path / "run").exists()
