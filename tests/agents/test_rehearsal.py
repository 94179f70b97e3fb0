"""Rehearsal (the replay baseline): what a finished game's memory keeps, how a batch is split, and the
mixed update that trains each rehearsed transition under its own game's biases and gains."""

from __future__ import annotations

import pytest
import torch

from agents.config import AgentConfig
from agents.dqn import DQNLearner
from agents.ewc.config import ConsolidationConfig
from agents.ewc.methods import Consolidation, make_consolidation, penalty_of, rehearses
from agents.network import QNetwork
from agents.rehearsal import Rehearsal, memory_bytes
from agents.replay import FrameReplay
from tests.agents.test_replay import StackingEnv, fill, fill_from_real_env


def test_a_memory_holds_exactly_the_transitions_drawn_from_real_atari_frames():
    """o_t is rebuilt from o_t-1 and o_t's newest frame: the same stacks the replay gives, episode
    ends (terminations and the 300-frame time limit) included."""
    replay, _ = fill_from_real_env("pong", num_envs=2, capacity=600, steps=250, max_frames=300)
    state = replay.generator.get_state()
    rehearsal = Rehearsal(per_game=100, share=0.5, device=torch.device("cpu"), seed=0)
    rehearsal.remember("pong", replay)
    replay.generator.set_state(state)
    drawn = replay.sample(100)
    memory = rehearsal.memories["pong"]
    assert torch.equal(memory["s_tm1"], drawn.s_tm1) and torch.equal(memory["r_t"], drawn.r_t)
    assert torch.equal(memory["newest"], drawn.s_t[:, -1:])
    everything = rehearsal.sample("pong", 400)
    assert everything.s_tm1.shape == (400, 4, 84, 84) and everything.a_tm1.dtype == torch.int64
    rebuilt = {(bytes(s.numpy()), bytes(n.numpy())) for s, n in zip(everything.s_tm1, everything.s_t)}
    kept = {(bytes(s.numpy()), bytes(n.numpy())) for s, n in zip(drawn.s_tm1, drawn.s_t)}
    assert rebuilt <= kept


def test_a_memory_keeps_all_of_a_replay_smaller_than_asked_and_a_revisit_replaces_it():
    replay, _ = fill(StackingEnv(2, (10, 10, 10), 1), FrameReplay(64, 2, frame_shape=(10, 10, 10), history=1), 6, 20, 0)
    rehearsal = Rehearsal(per_game=1000, share=0.5, device=torch.device("cpu"), seed=0)
    rehearsal.remember("a", replay)
    assert rehearsal.memories["a"]["s_tm1"].shape[0] == len(replay)
    rehearsal.remember("b", replay)
    first = rehearsal.memories["a"]["s_tm1"].clone()
    rehearsal.remember("a", replay)
    assert list(rehearsal.memories) == ["a", "b"] and not torch.equal(first, rehearsal.memories["a"]["s_tm1"])


@pytest.mark.parametrize(
    ("remembered", "game", "share", "expected"),
    [
        ([], "a", 0.5, []),
        (["a"], "a", 0.5, []),  # a revisit rehearses the other games, never its own memory
        (["a"], "b", 0.5, [("b", 16), ("a", 16)]),
        (["a", "b", "c"], "d", 0.5, [("d", 16), ("a", 6), ("b", 5), ("c", 5)]),
        (["a", "b"], "a", 0.25, [("a", 24), ("b", 8)]),
        (["a"], "b", 0.0, []),
        (["a"], "b", 0.99, [("b", 1), ("a", 31)]),  # round(0.99 * 32) = 32: the current game still keeps one
    ],
)
def test_a_batch_is_split_evenly_between_the_current_game_and_the_others(remembered, game, share, expected):
    rehearsal = Rehearsal(per_game=10, share=share, device=torch.device("cpu"), seed=0)
    rehearsal.memories = dict.fromkeys(remembered, {})
    assert rehearsal.split(game, 32) == expected


def filled_replay(seed: int) -> FrameReplay:
    return fill(
        StackingEnv(2, (10, 10, 10), 1), FrameReplay(200, 2, frame_shape=(10, 10, 10), history=1, seed=seed), 6, 60, seed
    )[0]


def minatar_learner(modulated: bool, rehearsal: Rehearsal | None, penalty: Consolidation | None = None) -> DQNLearner:
    torch.manual_seed(0)
    games = ["a", "b"] if modulated else []
    network = QNetwork("minatar", 6, games, (10, 10, 10), 1.0)
    return DQNLearner(network, AgentConfig(batch_size=32), penalty or Consolidation(), rehearsal)


def test_a_mixed_update_trains_each_part_under_its_own_games_biases_and_gains():
    rehearsal = Rehearsal(per_game=100, share=0.5, device=torch.device("cpu"), seed=0)
    learner = minatar_learner(modulated=True, rehearsal=rehearsal)
    rehearsal.remember("a", filled_replay(1))
    before = {game: [p.clone() for p in learner.online.modulation[game].parameters()] for game in ("a", "b")}
    learner.update(filled_replay(2), "b")
    for game in ("a", "b"):
        after = list(learner.online.modulation[game].parameters())
        assert not all(torch.equal(x, y) for x, y in zip(before[game], after)), f"{game}'s parameters did not move"


def test_a_mixed_loss_is_the_mean_over_the_whole_batch():
    """(1/B) sum over parts of the summed Huber losses equals the mean of the parts' losses weighted by size."""
    learner = minatar_learner(modulated=True, rehearsal=None)
    replay = filled_replay(3)
    first, second = replay.sample(20), replay.sample(12)
    mean_a, _ = learner.td_loss(first, "a")
    mean_b, _ = learner.td_loss(second, "b")
    learner.optimizer.zero_grad()
    stats = learner.mixed_gradient_step([("a", first), ("b", second)])[0]
    assert torch.allclose(stats[0], (20 * mean_a + 12 * mean_b) / 32)


def test_without_per_game_parameters_a_rehearsed_batch_is_one_batch():
    """The same network for every game: the current game's part and the memories' are concatenated
    and trained as one batch of batch_size (the mixed path is not needed)."""
    rehearsal = Rehearsal(per_game=100, share=0.5, device=torch.device("cpu"), seed=0)
    learner = minatar_learner(modulated=False, rehearsal=rehearsal)
    rehearsal.remember("a", filled_replay(1))
    seen = []
    original = learner.gradient_step
    learner.gradient_step = lambda game, *batch: seen.append(batch[0].shape[0]) or original(game, *batch)
    learner.update(filled_replay(2), "b")
    assert seen == [32]


def test_the_rehearsal_generator_is_saved_with_the_learner():
    rehearsal = Rehearsal(per_game=100, share=0.5, device=torch.device("cpu"), seed=0)
    learner = minatar_learner(modulated=False, rehearsal=rehearsal)
    rehearsal.remember("a", filled_replay(1))
    state = learner.get_state()
    expected = rehearsal.sample("a", 8).s_tm1
    learner.set_state(state)
    assert torch.equal(rehearsal.sample("a", 8).s_tm1, expected)


def test_method_names_say_their_penalty_and_whether_they_rehearse():
    assert (penalty_of("replay"), rehearses("replay")) == ("finetune", True)
    assert (penalty_of("ewc+replay"), rehearses("ewc+replay")) == ("ewc", True)
    assert (penalty_of("ewc"), rehearses("ewc")) == ("ewc", False)
    assert make_consolidation("online-ewc+replay", 10.0).name == "online-ewc"
    assert ConsolidationConfig(method="finetune+replay").problems()  # `replay` names it once
    assert ConsolidationConfig(method="replay", replay_share=1.0).problems() == [
        "consolidation.replay_share must be in [0, 1): the current game needs a part"
    ]


def test_memory_bytes_are_what_the_memory_holds():
    replay = filled_replay(1)
    rehearsal = Rehearsal(per_game=50, share=0.5, device=torch.device("cpu"), seed=0)
    rehearsal.remember("a", replay)
    held = sum(tensor.numel() * tensor.element_size() for tensor in rehearsal.memories["a"].values())
    assert held == memory_bytes(50, (10, 10, 10), 10)
    assert memory_bytes(50_000, (4, 84, 84), 1) / 1e9 == pytest.approx(1.76, abs=0.01)
