"""Branching a run at a game boundary (`train.py --branch-from`): the earlier games are trained once.

The promise docs/runs.md makes: a branch that keeps the source's method and settings continues
exactly as the source would have, had it been given the longer sequence, so its game-end checkpoint
is bit-identical to that of the straight run (same seed, same process, one thread). A branch to
fine-tuning starts from the same weights and optimizer state with no consolidation term.
"""

from __future__ import annotations

import json

import pytest
import torch

from ewc_training import run_dir as paths
from ewc_training.checkpoint import CheckpointError, load_checkpoint
from ewc_training.config import build_config
from ewc_training.launch import start_run
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer
from tests.conftest import run_train
from tests.ewc_training.test_game_boundary import same_tensors

GAMES = ["minatar:breakout", "minatar:space_invaders"]


def tiny(games: list[str], *overrides: str):
    return build_config(
        "configs/minatar.yaml",
        [
            f"run.games=[{', '.join(games)}]",
            "run.steps_per_game=400",
            "run.device=cpu",
            "run.log_every=100000",
            "run.checkpoint_every=0",
            "env.num_envs=4",
            "agent.learning_starts=100",
            "agent.batch_size=8",
            "agent.target_update_every=9",
            "consolidation.method=ewc",
            "consolidation.fisher_samples=16",
            "consolidation.probe_states=8",
            "eval.eval_every=0",
            *overrides,
        ],
    )


def train(config, run_dir):
    SequenceTrainer(config, run_dir, torch.device("cpu"), MemoryLogger()).run()


def branch(config, run_dir, checkpoint):
    trainer = SequenceTrainer.branch(config, run_dir, torch.device("cpu"), MemoryLogger(), checkpoint)
    trainer.run()
    return trainer


def final_checkpoint(run_dir, games):
    payload = load_checkpoint(paths.game_end_checkpoint(run_dir, len(games), games[-1]))
    payload.pop("git_commit")
    return payload


@pytest.fixture(scope="module")
def first_game(tmp_path_factory):
    """A one-game run: the source every branch below starts from. On one thread, as the tests' runs
    (conftest's per-test fixture is not yet in force for a module fixture): sums split over another
    thread count differ in the last bits, and a branch would then not be the straight run bit for bit."""
    run_dir = tmp_path_factory.mktemp("branch") / "source"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny(GAMES[:1]), run_dir)
    finally:
        torch.set_num_threads(threads)
    return paths.game_end_checkpoint(run_dir, 1, GAMES[0])


@pytest.mark.slow
def test_a_branch_that_keeps_the_method_is_the_straight_run_bit_for_bit(first_game, tmp_path):
    straight = tmp_path / "straight"
    train(tiny(GAMES), straight)
    branched = tmp_path / "branched"
    branch(tiny(GAMES), branched, first_game)
    assert same_tensors(final_checkpoint(straight, GAMES), final_checkpoint(branched, GAMES))
    # what the comparison covers: weights, optimizer moments, both games' Fishers and anchors
    assert set(final_checkpoint(branched, GAMES)["consolidation"]["per_game"]) == set(GAMES)
    # the branch point is the branch's own first game-end checkpoint, so evaluate.py scores every row
    kept = load_checkpoint(paths.game_end_checkpoint(branched, 1, GAMES[0]))
    assert same_tensors(kept["learner"], load_checkpoint(first_game)["learner"])
    assert kept["games"] == GAMES


@pytest.mark.slow
def test_a_branch_to_finetune_starts_from_the_same_network_without_a_penalty(first_game, tmp_path):
    trainer = SequenceTrainer.branch(
        tiny(GAMES, "consolidation.method=finetune"), tmp_path, torch.device("cpu"), MemoryLogger(), first_game
    )
    source = load_checkpoint(first_game)
    assert same_tensors(trainer.learner.get_state()["optimizer"], source["learner"]["optimizer"])
    assert same_tensors(trainer.learner.online.state_dict(), source["learner"]["online"])
    assert trainer.position.game_index == 1 and trainer.position.total_steps == 400
    assert float(trainer.learner.consolidation.penalty(trainer.learner.online).detach()) == 0.0
    ewc = SequenceTrainer.branch(tiny(GAMES), tmp_path / "ewc", torch.device("cpu"), MemoryLogger(), first_game)
    perturbed = {name: param + 0.01 for name, param in ewc.learner.online.state_dict().items()}
    ewc.learner.online.load_state_dict(perturbed)
    assert float(ewc.learner.consolidation.penalty(ewc.learner.online).detach()) > 0.0  # the EWC branch kept the Fisher


@pytest.mark.slow
def test_a_branch_records_its_source_in_run_json(first_game, tmp_path):
    branch(tiny(GAMES, "consolidation.method=finetune", "consolidation.ewc_lambda=0"), tmp_path, first_game)
    source = json.loads((tmp_path / "run.json").read_text())["branched_from"]
    assert source["checkpoint"] == str(first_game.resolve())
    assert source["games"] == GAMES[:1] and source["total_steps"] == 400 and source["method"] == "ewc"
    assert source["config"]["run"]["steps_per_game"] == 400


@pytest.mark.parametrize(
    ("games", "overrides", "message"),
    [
        (["minatar:space_invaders", "minatar:breakout"], [], "does not begin this run's sequence"),
        (GAMES[:1], [], "has no game left after it"),
        (GAMES, ["consolidation.method=l2"], r"keep it or drop it \(finetune\), not become l2"),
        (GAMES, ["agent.learning_rate=0.05"], r"agent\.learning_rate=0\.00025, this run has 0\.05"),
        (GAMES, ["run.seed=3"], "seed 0, this run has 3"),
        (GAMES, ["network.per_game_modulation=true"], "network.per_game_modulation="),
        ([GAMES[0], GAMES[1], GAMES[0]], ["run.steps_per_game=200"], "the revisit would miscount its earlier steps"),
    ],
)
@pytest.mark.slow
def test_a_branch_that_does_not_fit_is_refused_before_anything_is_written(first_game, tmp_path, games, overrides, message):
    with pytest.raises(CheckpointError, match=message):
        start_run(tiny(games, *overrides), str(tmp_path / "run"), overwrite=False, branch_from=str(first_game))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_branch_may_change_its_steps_per_game_when_it_revisits_nothing(first_game, tmp_path):
    trainer = start_run(
        tiny(GAMES, "run.steps_per_game=200"), str(tmp_path / "run"), overwrite=False, branch_from=str(first_game)
    )
    assert trainer.position.total_steps == 400 and trainer.config.run.steps_per_game == 200


@pytest.mark.slow
def test_train_py_refuses_a_mid_game_checkpoint_and_a_missing_one_in_one_line(tmp_path):
    source = tmp_path / "source"
    small = ["--config", "configs/minatar.yaml", "--device", "cpu", "--set", "env.num_envs=4", "--set", "eval.eval_every=0"]
    trained = run_train(
        *small,
        "--games",
        "minatar:breakout",
        "--steps-per-game",
        "200",
        "--run-dir",
        str(source),
        "--set",
        "run.checkpoint_every=100",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    for checkpoint, message in [
        (paths.latest_checkpoint(source), "saved in the middle of a game"),
        (tmp_path / "missing.pt", "no such file"),
    ]:
        branched = run_train(
            *small, "--games", ",".join(GAMES), "--branch-from", str(checkpoint), "--run-dir", str(tmp_path / "b")
        )
        assert branched.returncode == 2
        assert branched.stderr.strip().startswith("error:") and message in branched.stderr
        assert len(branched.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "b").exists()


def one_game_source(tmp_path, *overrides: str):
    """A run of GAMES[0] alone with `overrides` in tmp_path/source: its game-end checkpoint, to branch from."""
    train(tiny(GAMES[:1], *overrides), tmp_path / "source")
    return paths.game_end_checkpoint(tmp_path / "source", 1, GAMES[0])


@pytest.mark.slow
def test_with_per_game_modulation_a_branch_needs_a_source_of_the_same_games(tmp_path):
    checkpoint = one_game_source(tmp_path, "network.per_game_modulation=true")
    with pytest.raises(CheckpointError, match="needs a source trained on the same --games"):
        start_run(
            tiny(GAMES, "network.per_game_modulation=true"), str(tmp_path / "b"), overwrite=False, branch_from=str(checkpoint)
        )
