"""MinAtar end to end: two games trained by train.py, consolidated, and scored by evaluate.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ewc_training.checkpoint import load_checkpoint
from tests.conftest import ROOT, SUBPROCESS_ENV, run_train

GAMES = "minatar:breakout,minatar:space_invaders"
SMALL = [
    "--config",
    "configs/minatar.yaml",
    "--games",
    GAMES,
    "--device",
    "cpu",
    "--steps-per-game",
    "1600",
    "--set",
    "agent.learning_starts=400",
    "--set",
    "run.log_every=400",
    "--set",
    "eval.eval_every=800",
    "--set",
    "eval.episodes=2",
    "--set",
    "eval.max_episode_frames=300",
    "--set",
    "consolidation.fisher_samples=64",
    "--set",
    "consolidation.probe_states=32",
    "--set",
    "env.num_envs=4",
]


@pytest.mark.slow
def test_two_minatar_games_train_consolidate_and_evaluate(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_train(*SMALL, "--run-dir", str(run_dir))
    assert trained.returncode == 0, trained.stderr[-2000:]

    final = load_checkpoint(run_dir / "checkpoints" / "after_2_minatar_space_invaders.pt")
    assert final["games"] == ["minatar:breakout", "minatar:space_invaders"]
    assert final["learner"]["online"]["layers.0.weight"].shape == (16, 10, 3, 3)  # the MinAtar paper's network
    assert final["learner"]["updates"] == 2 * (1600 - 400) // 4
    fisher = final["consolidation"]["per_game"]["minatar:breakout"]["fisher"]
    assert all(f.min() >= 0 for f in fisher.values()) and sum(float(f.sum()) for f in fisher.values()) > 0
    assert final["probes"]["minatar:breakout"]["states"].shape == (32, 10, 10, 10)

    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for game in GAMES.split(","):
        assert {f"charts/{game}/episodic_return", f"eval/{game}/score", f"losses/{game}/td_loss"} <= tags
    assert "retention/minatar:breakout/greedy_agreement" in tags and "fisher/minatar:breakout/mean" in tags

    scored = subprocess.run(
        [sys.executable, "evaluate.py", str(run_dir), "--episodes", "2", "--max-episode-frames", "300", "--device", "cpu"],
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    report = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert report["normalisation"].startswith("MinAtar-normalised score")
    assert [row["games_done"] for row in report["rows"]] == [1, 2]
    assert all(len(cell["scores"]) == 2 for row in report["rows"] for cell in row["cells"].values())
    assert "MinAtar-normalised score" in scored.stdout

    video = subprocess.run(
        [sys.executable, "evaluate.py", str(run_dir), "--video"], cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True
    )
    assert video.returncode == 2 and video.stderr.strip().splitlines()[-1].startswith("error: --video films Atari")
