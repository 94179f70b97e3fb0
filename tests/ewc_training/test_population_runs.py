"""A population trains each of its cells as that cell's run alone would, and each cell is an ordinary run.

Real MinAtar games, two of them with per-game biases and gains, so every check crosses a game boundary
(each cell's own Fisher from its own replay, its penalty in force from then on). Cells: EWC, fine-tuning
and L2 over two seeds, in one process.

The equality bound: a cell's updates in the population are one batched computation (a grouped
convolution, batched matmuls, per-cell norms), which sums in another order than the lone network's
separate calls; each update's result then differs by float32 rounding (~1e-8 of a weight here). Over a
long run such differences grow (a ReLU or a greedy action flipped by one of them changes the rest of the
run, as between two GPUs), so these runs are short: 40 updates a game. The actions are then the same
and so are the episodes; the weights agree to `WEIGHT_TOLERANCE`, a hundredth of one Adam step
(learning rate 1e-3 here). tests/agents/test_population.py checks single updates more closely.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ewc_training import run_dir as paths
from ewc_training.checkpoint import load_checkpoint
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.population import PopulationTrainer, population_groups
from ewc_training.trainer import SequenceTrainer, TrainingDiverged, TrainingInterrupted
from tests.agents.closeness import assert_close

GAMES = ["minatar:breakout", "minatar:space_invaders"]
CELLS = [("ewc", 0), ("finetune", 1), ("l2", 0)]
WEIGHT_TOLERANCE = 1e-5


def config_for(method: str, seed: int, *overrides: str):
    config = build_config(
        "configs/minatar.yaml",
        [
            f"run.games=[{', '.join(GAMES)}]",
            "run.steps_per_game=480",
            "env.num_envs=4",
            "agent.learning_starts=320",
            "agent.steps_per_update=4",
            "agent.batch_size=16",
            "agent.learning_rate=0.001",
            "agent.target_update_every=20",
            f"consolidation.method={method}",
            f"consolidation.ewc_lambda={0.01 if method == 'l2' else 100.0}",
            "consolidation.fisher_samples=64",
            "consolidation.probe_states=16",
            "network.per_game_modulation=true",
            f"run.seed={seed}",
            "run.log_every=200",
            "run.checkpoint_every=0",
            "eval.eval_every=480",
            "eval.episodes=2",
            "eval.max_episode_frames=100",
            "run.device=cpu",
            *overrides,
        ],
    )
    config.validate()
    return config


def cell(root: Path, method: str, seed: int, *overrides: str) -> SequenceTrainer:
    return SequenceTrainer(config_for(method, seed, *overrides), root / f"{method}-s{seed}", torch.device("cpu"), MemoryLogger())


def episode_returns(trainer: SequenceTrainer) -> dict[str, list[tuple[int, float]]]:
    """The episodes it trained on, and its continual evaluation's scores (both games, at every game's end)."""
    return {tag: points for tag, points in trainer.logger.scalars.items() if tag.endswith(("episodic_return", "/score", "_hns"))}


def final_learner(run_dir: Path) -> dict:
    return load_checkpoint(paths.game_end_checkpoint(run_dir, len(GAMES), GAMES[-1]))["learner"]


@pytest.fixture(scope="module")
def alone_and_together(tmp_path_factory):
    root = tmp_path_factory.mktemp("population")
    alone = [cell(root / "alone", method, seed) for method, seed in CELLS]
    for trainer in alone:
        trainer.run()
    together = [cell(root / "together", method, seed) for method, seed in CELLS]
    PopulationTrainer(together).run()
    return alone, together


def test_each_cell_plays_the_episodes_it_plays_alone(alone_and_together):
    alone, together = alone_and_together
    for lone, member in zip(alone, together):
        assert episode_returns(member) == episode_returns(lone)
        assert [step for step, _ in episode_returns(lone)[f"eval/{GAMES[0]}/score"]] == [480, 960]


def test_each_cells_weights_and_optimizer_state_equal_its_lone_runs_to_float32_rounding(alone_and_together):
    alone, together = alone_and_together
    for (method, seed), lone, member in zip(CELLS, alone, together):
        expected, actual = final_learner(lone.run_dir), final_learner(member.run_dir)
        for name, tensor in expected["online"].items():
            assert_close(actual["online"][name], tensor, rtol=0, atol=WEIGHT_TOLERANCE, where=f"{method} s{seed} {name}")
        for index, state in expected["optimizer"]["state"].items():
            for key, value in state.items():
                scale = float(value.abs().max()) or 1.0
                assert_close(
                    actual["optimizer"]["state"][index][key], value, rtol=0, atol=1e-4 * scale, where=f"{method} {index} {key}"
                )


def test_each_cell_consolidated_its_own_game_with_its_own_fisher(alone_and_together):
    alone, together = alone_and_together
    for (method, _), lone, member in zip(CELLS, alone, together):
        expected = lone.learner.consolidation.get_state()
        actual = member.learner.consolidation.get_state()
        assert actual["name"] == method
        for name, precision in expected.get("precision", {}).items():
            assert_close(actual["precision"][name], precision, rtol=1e-3, atol=1e-9, where=f"{method} A {name}")


def test_a_cells_checkpoint_holds_only_its_own_numbers(alone_and_together):
    """Each cell's parameters are views of the population's stacked tensors; its checkpoint must not
    carry the other cells' rows (torch.save writes a view's whole storage)."""
    alone, together = alone_and_together
    for lone, member in zip(alone, together):
        path = paths.game_end_checkpoint(member.run_dir, len(GAMES), GAMES[-1])
        lone_path = paths.game_end_checkpoint(lone.run_dir, len(GAMES), GAMES[-1])
        assert path.stat().st_size < 1.05 * lone_path.stat().st_size


def test_a_stopped_population_resumes_every_cell_as_its_run_would_resume_alone(tmp_path):
    """Stopped in game 2 (as Ctrl-C stops it: every cell writes latest.pt and its replay), the cells'
    run directories resume together; each then plays the episodes, and ends with the weights, that
    resuming it alone from the same latest.pt gives."""
    stopped = [cell(tmp_path / "together", method, seed, "run.save_replay=true") for method, seed in CELLS]
    stop_in_game_two(stopped)
    for trainer in stopped:
        shutil.copytree(trainer.run_dir, tmp_path / "alone" / trainer.run_dir.name)

    def resume(run_dir: Path) -> SequenceTrainer:
        config = config_for(*next((m, s) for m, s in CELLS if run_dir.name == f"{m}-s{s}"), "run.save_replay=true")
        return SequenceTrainer.resume(config, run_dir, torch.device("cpu"), MemoryLogger(), paths.latest_checkpoint(run_dir))

    together = [resume(trainer.run_dir) for trainer in stopped]
    assert {trainer.position.step_in_game for trainer in together} == {together[0].position.step_in_game} != {0}
    assert len(population_groups(together)) == 1
    PopulationTrainer(together).run()
    for trainer in together:
        lone = resume(tmp_path / "alone" / trainer.run_dir.name)
        lone.run()
        assert episode_returns(trainer) == episode_returns(lone)
        expected, actual = final_learner(lone.run_dir), final_learner(trainer.run_dir)
        for name, tensor in expected["online"].items():
            assert_close(actual["online"][name], tensor, rtol=0, atol=WEIGHT_TOLERANCE, where=f"{trainer.run_dir.name} {name}")


def test_a_diverging_cell_is_stopped_and_reported_while_the_others_finish(tmp_path, capsys):
    """An EWC cell with an infinite lambda diverges at its first update after the boundary (its penalty
    is inf x 0 there); the fine-tuning cell beside it trains to the end."""
    cells = [cell(tmp_path, "finetune", 0), cell(tmp_path, "ewc", 1, "consolidation.ewc_lambda=.inf")]
    population = PopulationTrainer(cells)
    population.run()
    assert [trainer.config.consolidation.method for trainer, _ in population.diverged] == ["ewc"]
    assert population.cells == [cells[0]]
    assert paths.game_end_checkpoint(cells[0].run_dir, 2, GAMES[-1]).is_file()
    assert paths.game_end_checkpoint(cells[1].run_dir, 1, GAMES[0]).is_file()
    assert not paths.game_end_checkpoint(cells[1].run_dir, 2, GAMES[-1]).exists()
    assert "the other 1 cell(s) go on" in capsys.readouterr().err


def stop_in_game_two(cells: list[SequenceTrainer]) -> None:
    """Train `cells` as one population until 20 updates into game 2, then stop them as Ctrl-C does."""
    population = PopulationTrainer(cells)
    original = population.learner.update

    def update_then_stop(replays, game):
        stats = original(replays, game)
        if cells[0].position.game_index == 1 and cells[0].position.updates_in_game == 20:
            population.request_stop("SIGINT")
        return stats

    population.learner.update = update_then_stop
    with pytest.raises(TrainingInterrupted, match="SIGINT"):
        population.run()


def test_cells_resuming_with_and_without_their_replay_train_apart_each_as_alone(tmp_path):
    """One cell saved its replay, the other did not: resumed, the first learns on at once and the second
    waits for its refill, so they cannot step together; each resumes as it would alone."""
    settings = {"ewc": "run.save_replay=true", "finetune": "run.save_replay=false"}
    cells = [cell(tmp_path / "together", method, seed, settings[method]) for method, seed in CELLS[:2]]
    stop_in_game_two(cells)
    for trainer in cells:
        shutil.copytree(trainer.run_dir, tmp_path / "alone" / trainer.run_dir.name)

    def resume(run_dir: Path, method: str, seed: int) -> SequenceTrainer:
        config = config_for(method, seed, settings[method])
        return SequenceTrainer.resume(config, run_dir, torch.device("cpu"), MemoryLogger(), paths.latest_checkpoint(run_dir))

    together = [resume(trainer.run_dir, method, seed) for trainer, (method, seed) in zip(cells, CELLS)]
    groups = population_groups(together)
    assert [[trainer.config.consolidation.method for trainer in group] for group in groups] == [["ewc"], ["finetune"]]
    for group in groups:
        PopulationTrainer(group).run()
    for trainer, (method, seed) in zip(together, CELLS):
        lone = resume(tmp_path / "alone" / trainer.run_dir.name, method, seed)
        lone.run()
        assert trainer.learner.updates == lone.learner.updates
        assert episode_returns(trainer) == episode_returns(lone)


def test_a_run_alone_that_diverges_raises_and_a_population_records_it(tmp_path):
    lone = cell(tmp_path, "ewc", 1, "consolidation.ewc_lambda=.inf")
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        lone.run()
    population = PopulationTrainer([cell(tmp_path / "again", "ewc", 1, "consolidation.ewc_lambda=.inf")])
    population.run()  # train.py goes on to its other populations, then reports it
    assert len(population.diverged) == 1 and population.cells == []
