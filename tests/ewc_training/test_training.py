"""End to end on real ALE: the smoke preset through the real command line, and EWC vs fine-tuning."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.ewc.probes import retention
from ewc_training.checkpoint import load_checkpoint
from ewc_training.config import build_config
from ewc_training.logger import MemoryLogger
from ewc_training.trainer import SequenceTrainer
from tests.conftest import run_train


def scalars(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


SHORTER = ["--set", "run.steps_per_game=800", "--set", "run.log_every=100"]
"""The smoke preset at 800 agent steps a game, not 2000: still 100 updates a game after learning
starts at 400, epsilon's whole decay (over half the game) and a logged point early in Breakout's
decay, in 40% of the time. Every file and tag the test asserts is written the same way."""


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    result = run_train(
        *("--config", "configs/smoke.yaml", "--games", "pong,breakout", "--run-dir", str(run_dir), "--device", "cpu"),
        *("--seed", "3", *SHORTER),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_smoke_run_writes_tags_checkpoints_and_provenance(smoke_run):
    tags = scalars(smoke_run)
    for game in ("pong", "breakout"):
        for tag in ("charts/{}/epsilon", "losses/{}/td_loss", "losses/{}/q_values", "losses/{}/consolidation"):
            assert tag.format(game) in tags, tag.format(game)
    assert "charts/SPS" in tags
    assert "fisher/pong/mean" in tags and "fisher/pong/share_layers_4" in tags
    assert "retention/pong/greedy_agreement" in tags and "retention/pong/mean_abs_dq" in tags
    assert any(tag.endswith("/episodic_return") for tag in tags)
    # the consolidation term is zero during game 1 and positive once Pong is consolidated
    assert all(value == 0 for _, value in tags["losses/pong/consolidation"])
    assert any(value > 0 for _, value in tags["losses/breakout/consolidation"])
    # epsilon restarts at the new game: Breakout starts high again after Pong ended low
    assert tags["charts/pong/epsilon"][-1][1] == pytest.approx(0.01)
    assert tags["charts/breakout/epsilon"][0][1] > 0.5
    assert (smoke_run / "config.yaml").is_file() and "git_commit" in (smoke_run / "run.json").read_text()

    first = load_checkpoint(smoke_run / "checkpoints" / "after_1_pong.pt")
    second = load_checkpoint(smoke_run / "checkpoints" / "after_2_breakout.pt")
    assert first["games"] == second["games"] == ["pong", "breakout"]
    assert first["position"]["game_index"] == 1 and second["position"]["game_index"] == 2
    assert list(second["consolidation"]["per_game"]) == ["pong", "breakout"]
    assert (smoke_run / "checkpoints" / "latest.pt").is_file()


def train_pong_then_breakout(method, strength, seed, tmp_path):
    config = build_config(
        "configs/smoke.yaml",
        [
            "run.steps_per_game=1000",
            "agent.learning_starts=600",
            "agent.learning_rate=3e-3",
            f"consolidation.method={method}",
            f"consolidation.ewc_lambda={strength}",
            "consolidation.fisher_samples=256",
            "consolidation.probe_states=256",
            "run.log_every=100000",
            "run.checkpoint_every=0",
            "run.device=cpu",
            f"run.seed={seed}",
        ],
    )
    trainer = SequenceTrainer(config, tmp_path / f"{method}-{seed}", torch.device("cpu"), MemoryLogger())
    trainer.run()
    return retention(trainer.learner.online, trainer.state.probes["pong"], "pong")


def train_in_one_thread(method, strength, seed, tmp_path):
    """`train_pong_then_breakout` in a worker process, which starts with torch's default thread count."""
    torch.set_num_threads(1)
    return train_pong_then_breakout(method, strength, seed, tmp_path)


@pytest.mark.slow
def test_ewc_keeps_pong_behaviour_that_finetuning_loses(tmp_path):
    """After 100 Breakout updates at a high learning rate, fine-tuning has moved Pong's greedy
    actions; EWC with a large lambda keeps them, and its Q-values on Pong barely move.

    This early in training the greedy action is nearly the same on every Pong state, so one seed
    gives an all-or-nothing agreement: two seeds are averaged (measured: fine-tuning kept Pong's
    greedy actions in 1 of 4 seeds, EWC with lambda 1e7 in 2 of 2).

    At lambda 1e7 any positive Fisher freezes the network (one from the wrong game, or L2's ones,
    would pass too): this checks that the penalty reaches the update, not which Fisher it holds.
    That the loop consolidates each game from its own replay, weights and modulation is
    tests/ewc_training/test_game_boundary.py's job."""
    # The four runs are independent, each seeded by its config: two at a time on CI's two cores,
    # one torch thread each (a run is ~30 s of single-threaded updates).
    runs = [(method, strength, seed) for method, strength in (("finetune", 0.0), ("ewc", 1e7)) for seed in (0, 1)]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(train_in_one_thread, *zip(*runs), [tmp_path] * len(runs)))
    finetune, ewc = results[:2], results[2:]

    def mean(runs, key):
        return sum(run[key] for run in runs) / len(runs)

    assert mean(ewc, "greedy_agreement") >= mean(finetune, "greedy_agreement") + 0.4
    assert mean(ewc, "mean_abs_dq") * 10 < mean(finetune, "mean_abs_dq")
