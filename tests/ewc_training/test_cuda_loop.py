"""On a GPU, the training loop with the update captured as a CUDA graph writes the checkpoints the
eager loop writes (scripts/gpu_check.sh runs it; skipped without CUDA).

Acting is made independent of the network (epsilon 1 throughout), so both loops play the same
episodes and store the same replay whatever the last bits of their Q-values; what is compared is
then everything the updates and the boundary produce: weights, target, Adam's moments, each game's
Fisher and anchor, the probes' Q-values.
"""

from __future__ import annotations

import pytest
import torch

from ewc_training import run_dir as paths
from ewc_training.checkpoint import load_checkpoint
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer
from tests.agents.closeness import adam_steps, assert_close
from tests.ewc_training.test_game_boundary import FAMILIES, tiny_config


def game_end_checkpoints(run_dir, device: str, mode: str) -> list[dict]:
    """A two-game Atari run with per-game modulation in `mode` on `device`; its after_<k>_<game>.pt files."""
    games = FAMILIES["atari"]
    config = tiny_config(
        games,
        True,
        f"run.device={device}",
        f"agent.update_mode={mode}",
        "agent.epsilon_start=1.0",
        "agent.epsilon_end=1.0",
    )
    trainer = SequenceTrainer(config, run_dir, torch.device(device), MemoryLogger())
    trainer.run()
    assert trainer.learner.update_mode == mode
    return [load_checkpoint(paths.game_end_checkpoint(run_dir, k, game)) for k, game in enumerate(games, start=1)]


def assert_close_nested(a, b, where: str = "", steps: dict[str, float] | None = None) -> None:
    """Equal structure, equal integer tensors, float tensors close; a failure reports the largest absolute
    and relative difference and, for a weight in `steps`, the size of one Adam step of it."""
    steps = steps or {}
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():
            assert_close(b, a, rtol=1e-4, atol=1e-5, where=where, step=steps.get(where.rsplit("/", 1)[-1]))
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close_nested(a[key], b[key], f"{where}/{key}", steps)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_close_nested(x, y, f"{where}[{index}]", steps)


def compare(eager: list[dict], graphed: list[dict]) -> None:
    for number, (first, second) in enumerate(zip(eager, graphed), start=1):
        assert first["position"] == second["position"]
        assert first["learner"]["updates"] == second["learner"]["updates"] > 0
        steps = adam_steps(first["learner"]["optimizer"], list(first["learner"]["online"]))  # the eager run's next step
        for part in ("online", "target"):
            assert_close_nested(first["learner"][part], second["learner"][part], f"after game {number}: {part}", steps)
        assert_close_nested(first["learner"]["optimizer"]["state"], second["learner"]["optimizer"]["state"], "optimizer")
        assert_close_nested(first["consolidation"]["per_game"], second["consolidation"]["per_game"], "per_game")
        for game, probe in first["probes"].items():
            assert torch.equal(probe["states"], second["probes"][game]["states"]), game
            torch.testing.assert_close(probe["q_values"], second["probes"][game]["q_values"], rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.usefixtures("deterministic_cuda")
def test_cuda_graph_loop_writes_the_eager_loops_checkpoints(tmp_path):
    eager = game_end_checkpoints(tmp_path / "eager", "cuda", "eager")
    graphed = game_end_checkpoints(tmp_path / "graphed", "cuda", "cuda-graph")
    compare(eager, graphed)
