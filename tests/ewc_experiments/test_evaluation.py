"""Evaluation on real ALE: episodes, videos, continual evaluation while training, and evaluate.py.

Two tiny real runs (pong then breakout, 128 agent steps a game) are trained once for the module
through train.py; evaluation episodes are cut at 200 frames so that every test stays fast.
"""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import evaluate
import ewc_evaluation.protocol as evaluation
from agents.network import QNetwork
from envs.atari import make_env
from envs.config import EnvConfig
from envs.games import human_normalised_score
from ewc_evaluation.config import EvalConfig
from ewc_evaluation.protocol import episode_quotas, play_episodes
from ewc_evaluation.video import SCALE, film_episode
from ewc_training.checkpoint import load_checkpoint, save_checkpoint
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.run_dir import game_end_checkpoint, write_run_files
from ewc_training.schema import Position
from ewc_training.trainer import SequenceTrainer
from tests.conftest import ROOT, SUBPROCESS_ENV

SHORT = ["--episodes", "2", "--max-episode-frames", "200", "--device", "cpu"]
TINY = [
    "--config",
    "configs/smoke.yaml",
    "--games",
    "pong,breakout",
    "--device",
    "cpu",
    "--set",
    "run.steps_per_game=128",
    "--set",
    "agent.learning_starts=64",
    "--set",
    "run.log_every=64",
    "--set",
    "consolidation.fisher_samples=32",
    "--set",
    "eval.eval_every=128",
    "--set",
    "eval.episodes=2",
    "--set",
    "eval.max_episode_frames=200",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny real runs, trained side by side: fine-tuning (seed 0) and EWC with lambda 100 (seed 1)."""
    folder = tmp_path_factory.mktemp("runs")
    commands = {
        folder / "finetune": ["--method", "finetune", "--seed", "0"],
        folder / "ewc": ["--method", "ewc", "--ewc-lambda", "100", "--seed", "1"],
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "train.py", *TINY, *flags, "--run-dir", str(run_dir)],
            cwd=ROOT,
            env=SUBPROCESS_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run_dir, flags in commands.items()
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    return list(commands)


def random_network() -> QNetwork:
    torch.manual_seed(0)
    return QNetwork()


def test_episode_quotas_share_episodes_evenly():
    assert episode_quotas(5, 2).tolist() == [3, 2]
    assert episode_quotas(16, 16).tolist() == [1] * 16
    assert episode_quotas(35, 16).sum() == 35


def test_play_episodes_plays_exactly_the_episodes_asked_and_repeats_with_its_seed(monkeypatch):
    monkeypatch.setattr(evaluation, "MAX_PARALLEL_EPISODES", 2)  # 5 episodes on 2 emulators: 3 + 2
    protocol = EvalConfig(episodes=5, epsilon=0.5, max_episode_frames=200)
    network = random_network()
    scores = play_episodes(network, "breakout", protocol, EnvConfig(), seed=4)
    assert len(scores) == 5
    assert np.array_equal(scores, play_episodes(network, "breakout", protocol, EnvConfig(), seed=4))


def test_the_filming_emulator_shows_what_the_player_sees():
    config = EnvConfig(sticky_action_prob=0.25)
    player, screen = make_env("breakout", 1, config), make_env("breakout", 1, config, screen=True)
    observations, _ = player.reset(seed=3)
    frames, _ = screen.reset(seed=3)
    actions = np.random.default_rng(0).integers(18, size=(200, 1))
    for action in actions:
        observations, reward, terminated, truncated, _ = player.step(action)
        frames, screen_reward, screen_terminated, screen_truncated, _ = screen.step(action)
        assert (reward, terminated, truncated) == (screen_reward, screen_terminated, screen_truncated)
    gray = np.asarray(Image.fromarray(frames[0, -1]).convert("L").resize((84, 84), Image.BILINEAR), dtype=float)
    assert np.corrcoef(gray.ravel(), observations[0, -1].ravel())[0, 1] > 0.98
    player.close()
    screen.close()


def test_film_episode_writes_a_real_time_mp4(tmp_path):
    av = pytest.importorskip("av")  # optional: only --video needs it
    path = tmp_path / "pong.mp4"
    protocol = EvalConfig(episodes=1, epsilon=0.05, max_episode_frames=200)
    film_episode(random_network(), "pong", protocol, EnvConfig(), seed=0, path=path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert stream.average_rate == 15  # 60 Hz emulator, 4 frames per agent step
        assert (stream.width, stream.height) == (160 * SCALE, 210 * SCALE)
    assert frames == 200 // 4 + 1  # the reset screen, then one per agent step until the cut


@pytest.mark.slow
def test_training_logs_continual_evaluation_of_every_game(runs):
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "eval/pong/score",
        "eval/pong/hns",
        "eval/breakout/score",
        "eval/breakout/hns",
        "eval/mean_hns",
        "eval/total_clipped_hns",
    }
    assert expected <= tags
    # every 128 agent steps: mid-run (end of Pong's steps) and at the end, all games each time
    assert [event.step for event in events.Scalars("eval/mean_hns")] == [128, 256]
    for index in range(2):
        hns = {game: events.Scalars(f"eval/{game}/hns")[index].value for game in ("pong", "breakout")}
        for game in hns:
            score = events.Scalars(f"eval/{game}/score")[index].value
            assert hns[game] == pytest.approx(human_normalised_score(game, score), abs=1e-5)
        assert events.Scalars("eval/mean_hns")[index].value == pytest.approx(np.mean(list(hns.values())), abs=1e-5)
        clipped_sum = sum(min(value, 1.0) for value in hns.values())
        assert events.Scalars("eval/total_clipped_hns")[index].value == pytest.approx(clipped_sum, abs=1e-5)


@pytest.mark.slow
def test_evaluate_writes_the_matrix_files(runs, capsys):
    run_dir = runs[0]
    assert evaluate.main([str(run_dir), *SHORT]) == 0
    printed = capsys.readouterr().out
    assert "after game 1 (pong)" in printed and "after game 2 (breakout)" in printed
    assert "final mean human-normalised score" in printed
    # SHORT repeats the runs' own eval section (TINY), and a flag that changes nothing reads as the run's
    assert "2 episodes per cell (run config)" in printed and "episodes cut at 200 frames (run config)" in printed

    report = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert report["sequence"] == ["pong", "breakout"] and report["errors"] == []
    assert [row["checkpoint"] for row in report["rows"]] == ["after_1_pong.pt", "after_2_breakout.pt"]
    cell = report["rows"][1]["cells"]["pong"]
    assert len(cell["scores"]) == 2 and cell["score_mean"] == pytest.approx(np.mean(cell["scores"]))
    assert cell["hns_mean"] == pytest.approx(human_normalised_score("pong", cell["score_mean"]))
    final_hns = [report["rows"][1]["cells"][game]["hns_mean"] for game in ("pong", "breakout")]
    assert report["metrics"]["final_mean_hns"] == pytest.approx(np.mean(final_hns))
    assert set(report["metrics"]["forgetting"]) == {"pong"}

    with (run_dir / "eval" / "eval.csv").open() as handle:
        cells = list(csv.DictReader(handle))
    assert [(row["checkpoint"], row["game"]) for row in cells] == [
        ("after_1_pong.pt", "pong"),
        ("after_1_pong.pt", "breakout"),
        ("after_2_breakout.pt", "pong"),
        ("after_2_breakout.pt", "breakout"),
    ]
    with Image.open(run_dir / "eval" / "matrix.png") as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        image.verify()
    assert (run_dir / "eval" / "eval.md").read_text() in printed


@pytest.mark.slow
def test_evaluate_compares_runs_in_one_table(runs, capsys):
    assert evaluate.main([*map(str, runs), *SHORT, "--games", "pong"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| finetune ", "| ewc "))]
    finetune, ewc = (json.loads((run / "eval" / "eval.json").read_text()) for run in runs)
    assert table[0].startswith("| finetune | finetune | - | 0 | ")
    assert table[1].startswith("| ewc | ewc | 100 | 1 | ")
    assert f"{finetune['metrics']['final_mean_hns']:.3f}" in table[0]
    assert f"{ewc['metrics']['mean_forgetting']:.3f}" in table[1]
    assert f"{ewc['metrics']['final_total_clipped_hns']:.3f}" in table[1]
    assert finetune["games"] == ["pong"]


@pytest.mark.slow
def test_bad_checkpoints_get_one_line_each_and_the_rest_are_evaluated(runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(runs[0], run_dir)
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "after_3_junk.pt").write_bytes(b"not a checkpoint")
    good = load_checkpoint(checkpoints / "after_1_pong.pt")
    save_checkpoint(checkpoints / "after_4_large.pt", {**good, "learner": {"online": QNetwork("large").state_dict()}})
    save_checkpoint(checkpoints / "after_5_foreign.pt", {**good, "games": ["seaquest"]})

    assert evaluate.main([str(run_dir), *SHORT, "--games", "pong"]) == 1
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    error_lines = [line for line in errors.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 3
    assert "after_3_junk.pt" in error_lines[0] and "after_4_large.pt" in error_lines[1]
    assert "after_5_foreign.pt" in error_lines[2] and "seaquest" in error_lines[2]
    report = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert [row["checkpoint"] for row in report["rows"]] == ["after_1_pong.pt", "after_2_breakout.pt"]
    assert len(report["errors"]) == 3


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["no/such/run"], "not a run directory"),
        (["{run}", "--games", "pongg"], "did you mean pong"),
        (["{run}", "--checkpoints", "after_9_nothing.pt"], "no such checkpoint file"),
        (["{run}", "--device", "tpu"], "unknown device"),
    ],
)
@pytest.mark.slow
def test_bad_input_is_one_line_and_a_nonzero_exit(runs, capsys, arguments, message):
    arguments = [argument.format(run=runs[0]) for argument in arguments]
    assert evaluate.main([*arguments, "--episodes", "1", "--max-episode-frames", "40"]) != 0
    errors = capsys.readouterr().err
    assert "Traceback" not in errors
    assert any(line.startswith("error:") and message in line for line in errors.splitlines())


def test_a_bad_flag_value_is_one_line_without_the_usage(capsys):
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(["runs/x", "--episodes", "-3"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: argument --episodes: must be a positive whole number, got '-3'\n"


def minatar_run(run_dir, *overrides: str):
    """A MinAtar run directory as train.py leaves it after one game (config.yaml, after_1 checkpoint),
    with an untrained network: what is checked is how it is scored, not how well."""
    config = build_config(ROOT / "configs" / "minatar.yaml", ["run.games=[minatar:breakout]", *overrides])
    write_run_files(run_dir, config, torch.device("cpu"))
    trainer = SequenceTrainer(config, run_dir, torch.device("cpu"), MemoryLogger())
    trainer.position = Position(game_index=1, total_steps=config.run.steps_per_game)
    trainer.save(game_end_checkpoint(run_dir, 1, "minatar:breakout"))
    return run_dir


def test_evaluate_scores_a_minatar_run_with_its_own_protocol(tmp_path, monkeypatch, capsys):
    """No flags: the run's eval section (3 episodes, the 10,000-step cap of configs/minatar.yaml) and
    its sticky actions reach the emulators, not evaluate.py's Atari defaults (108,000 frames)."""
    built = []

    def recording_make_env(game, num_envs, config):
        built.append(config)
        return make_minatar_env(game, num_envs, config)

    make_minatar_env = evaluation.make_env
    monkeypatch.setattr(evaluation, "make_env", recording_make_env)
    run_dir = minatar_run(tmp_path / "run", "eval.episodes=3")
    assert evaluate.main([str(run_dir), "--device", "cpu"]) == 0
    assert [(config.max_episode_frames, config.sticky_action_prob) for config in built] == [(10_000, 0.1)]
    report = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert {key: report["protocol"][key] for key in ("episodes", "epsilon", "max_episode_frames")} == {
        "episodes": 3,
        "epsilon": 0.05,
        "max_episode_frames": 10_000,
    }
    assert set(report["protocol"]["sources"].values()) == {"run config"}
    assert len(report["rows"][0]["cells"]["minatar:breakout"]["scores"]) == 3
    printed = capsys.readouterr()
    said = "3 episodes per cell (run config), epsilon 0.05 (run config), episodes cut at 10,000 agent steps (run config)"
    assert said in printed.err and said in printed.out  # before scoring, and in eval.md
    assert "final mean MinAtar-normalised score" in printed.out and "HNS" not in printed.out


def test_runs_given_together_are_each_scored_with_their_own_protocol(tmp_path, capsys):
    two = minatar_run(tmp_path / "two", "eval.episodes=2")
    three = minatar_run(tmp_path / "three", "eval.episodes=3", "eval.epsilon=0.1")
    assert evaluate.main([str(two), str(three), "--device", "cpu", "--max-episode-frames", "500"]) == 0
    protocols = [json.loads((run / "eval" / "eval.json").read_text())["protocol"] for run in (two, three)]
    assert [(p["episodes"], p["epsilon"], p["max_episode_frames"]) for p in protocols] == [(2, 0.05, 500), (3, 0.1, 500)]
    assert protocols[1]["sources"] == {"episodes": "run config", "epsilon": "run config", "max_episode_frames": "flag"}
    assert "scored with different protocols" in capsys.readouterr().out
