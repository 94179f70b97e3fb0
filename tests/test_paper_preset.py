"""configs/paper.yaml is Kirkpatrick et al.'s Table S2, and its update is DeepMind's RMSProp step."""

import copy
import json

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.build import build_learner
from agents.ewc.methods import make_consolidation
from agents.replay import Transitions
from envs import atari
from envs.families import ATARI
from ewc_training.config import build_config
from tests.conftest import ROOT, run_train

PAPER = ROOT / "configs" / "paper.yaml"


def test_every_table_s2_row_is_in_the_preset_or_the_code():
    config = build_config(PAPER)
    agent, env, cons, network = config.agent, config.env, config.consolidation, config.network
    # fixed in code
    assert atari.FRAMESKIP == 4  # action repeat 4
    assert ATARI.frame_shape == (1, 84, 84) and ATARI.history == 4  # 84x84 input, history 4
    assert atari.NUM_ACTIONS == 18  # the full action set
    # the preset
    assert env.noop_max == 30
    assert agent.gamma == 0.99
    assert (agent.optimizer, agent.learning_rate, agent.loss_reduction) == ("rmsprop", 2.5e-4, "sum")
    assert agent.max_grad_norm == 50.0 and agent.grad_clip_scope == "total"
    assert agent.learning_rate / 0.01**0.5 == pytest.approx(0.0025)  # "max. learning rate": eps 0.01 in the root
    assert env.sticky_action_prob == 0.0 and env.num_envs == 1
    assert (agent.batch_size, agent.steps_per_update) == (32, 4)
    assert (agent.replay_capacity, agent.learning_starts) == (50_000, 50_000)
    assert agent.target_update_every * agent.steps_per_update == 7_500  # agent steps between target syncs
    assert (agent.epsilon_start, agent.epsilon_end) == (1.0, 0.01)
    assert (agent.epsilon_decay_start, agent.epsilon_decay_start + agent.epsilon_decay_steps) == (50_000, 1_050_000)
    assert agent.epsilon_clock == "game"  # "a different timer for each of the tasks"
    assert cons.fisher_samples == 100 * agent.batch_size  # 100 minibatches
    assert (cons.method, cons.ewc_lambda) == ("ewc", 400.0)
    assert cons.consolidate_after_steps * atari.FRAMESKIP == 20_000_000  # EWC on after 20M frames
    assert network.architecture == "large" and network.per_game_modulation
    # every key the preset sets is a real config key (build_config would raise) and carries its row
    for section in yaml.safe_load(PAPER.read_text()).values():
        assert section, "an empty section"
    assert all("#" in line for line in PAPER.read_text().splitlines() if line.startswith("  ") and ":" in line)


def test_the_large_network_has_per_game_biases_at_0_and_gains_at_1():
    config = build_config(PAPER)
    network = build_learner(config, ["pong", "breakout"], ATARI, torch.device("cpu"), seed=0).online
    assert [layer.weight.shape[0] for layer in network.layers] == [32, 64, 128, 1024, 18]
    for game in ("pong", "breakout"):
        modulation = network.modulation[game]
        assert all(torch.equal(bias, torch.zeros_like(bias)) for bias in modulation.biases)
        assert all(torch.equal(gain, torch.ones_like(gain)) for gain in modulation.gains)


def paper_batch(n=32, seed=0) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g)
    rewards = torch.randint(-1, 2, (n,), generator=g).float()
    discounts = (torch.rand(n, generator=g) > 0.1).float()
    return Transitions(frames, torch.randint(0, 18, (n,), generator=g), rewards, discounts, frames.roll(1, 0))


def deepmind_steps(network, batches: list[Transitions], game: str, max_norm: float, lr=2.5e-4, gamma=0.99) -> list[torch.Tensor]:
    """Updates of DeepMind's DQN (NeuralQLearner.lua: getQUpdate, qLearnMinibatch), by hand, with
    Double-DQN targets (the paper's SI: "trained with the Double Q-learning algorithm").

    delta = clip(y - Q(s, a), -1, 1); dw = sum over the batch of delta * dQ(s, a)/dw (a sum, not a
    mean), renormalised to max norm `max_norm` (Table S2: 50); g <- 0.95 g + 0.05 dw,
    g2 <- 0.95 g2 + 0.05 dw^2; w <- w + lr dw / sqrt(g2 - g^2 + 0.01). Returns the final weights.
    """
    target = copy.deepcopy(network)  # synced at the start, not again within these few updates
    params = list(network.parameters())
    g = [torch.zeros_like(p) for p in params]
    g2 = [torch.zeros_like(p) for p in params]
    for batch in batches:
        q = network(batch.s_tm1, game).gather(1, batch.a_tm1.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            best = network(batch.s_t, game).argmax(dim=1, keepdim=True)
            y = batch.r_t + gamma * batch.discount_t * target(batch.s_t, game).gather(1, best).squeeze(1)
            delta = (y - q).clamp(-1.0, 1.0)
        dw = torch.autograd.grad((q * delta).sum(), params, allow_unused=True)
        dw = [torch.zeros_like(p) if d is None else d for p, d in zip(params, dw)]
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in dw)).item()
        dw = [d * min(1.0, max_norm / norm) for d in dw]
        with torch.no_grad():
            for p, d, g_p, g2_p in zip(params, dw, g, g2):
                g_p.mul_(0.95).add_(0.05 * d)
                g2_p.mul_(0.95).add_(0.05 * d * d)
                p.add_(lr * d / torch.sqrt(g2_p - g_p * g_p + 0.01))
    return [p.detach() for p in params]


@pytest.mark.parametrize("max_norm", [50.0, 1.0], ids=["table-norm-50", "norm-reached"])
def test_the_paper_presets_updates_are_deepminds_rmsprop_steps(max_norm):
    """Two updates, so RMSProp's running averages matter; at norm 1 the renormalisation acts (at 50 it
    does not on these batches: the summed gradient's norm is about 8). The bug this guards: with the
    batch *mean* loss the same step is 32x (the batch size) too small."""
    config = build_config(PAPER, [f"agent.max_grad_norm={max_norm}"])
    learner = build_learner(config, ["pong"], ATARI, torch.device("cpu"), seed=0)
    initial = copy.deepcopy(learner.online)
    before = [p.detach().clone() for p in initial.parameters()]
    batches = [paper_batch(seed=0), paper_batch(seed=1)]
    expected = deepmind_steps(copy.deepcopy(initial), batches, "pong", max_norm)
    for batch in batches:
        learner.update(batch, "pong")
    # The same float32 arithmetic in another order: the steps agree to 1e-3 of their size overall, and
    # each to 1e-7 (the median step is about 4e-7, the largest about 1e-3).
    steps = torch.cat([(new.detach() - old).flatten() for old, new in zip(before, learner.online.parameters())])
    wanted = torch.cat([(want - old).flatten() for old, want in zip(before, expected)])
    assert ((steps - wanted).norm() / wanted.norm()).item() < 1e-3
    torch.testing.assert_close(steps, wanted, rtol=1e-2, atol=1e-7)

    if max_norm == 50.0:
        mean_config = build_config(PAPER, ["agent.loss_reduction=mean"])
        mean_learner = build_learner(mean_config, ["pong"], ATARI, torch.device("cpu"), seed=0)
        mean_learner.update(batches[0], "pong")
        first = deepmind_steps(copy.deepcopy(initial), batches[:1], "pong", max_norm)
        deepmind_step = (first[0] - before[0]).abs().median()
        mean_step = (mean_learner.online.layers[0].weight.detach() - before[0]).abs().median()
        assert deepmind_step / mean_step == pytest.approx(32, rel=0.05)  # the bug the sum removes


def test_td_clip_scope_clips_the_td_gradient_alone():
    """grad_clip_scope=td: g = clip(grad L_TD) + grad P; total: g = clip(grad(L_TD + P))."""
    batch = paper_batch(8)
    steps = {}
    for scope in ("total", "td"):
        config = build_config(PAPER, ["agent.optimizer=adam", "agent.max_grad_norm=1e-3", f"agent.grad_clip_scope={scope}"])
        learner = build_learner(config, ["pong"], ATARI, torch.device("cpu"), seed=0)
        learner.consolidation = make_consolidation("l2", 1e6, 1.0)
        learner.consolidation.end_game("pong", learner.online, lambda: None)
        with torch.no_grad():  # move away from the anchor so the penalty has a gradient
            learner.online.layers[0].weight.add_(0.01)
        td_loss, _ = learner.td_loss(batch, "pong")
        penalty = learner.consolidation.penalty(learner.online)
        learner.optimizer.zero_grad()
        learner.backward_clipped(td_loss, penalty)
        steps[scope] = learner.online.layers[0].weight.grad.clone()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in learner.online.parameters() if p.grad is not None))
        if scope == "total":
            assert norm.item() == pytest.approx(1e-3, rel=1e-4)
        else:  # the penalty's gradient (1e6 * 0.01 per weight) is added after the TD gradient was clipped
            assert norm.item() > 1e3
    assert not torch.allclose(steps["total"], steps["td"])


@pytest.mark.slow
def test_a_drawn_sequence_runs_end_to_end_with_the_paper_preset(tmp_path):
    run_dir = tmp_path / "paper"
    small = [
        "agent.replay_capacity=600",
        "agent.learning_starts=100",
        "agent.epsilon_decay_start=0",
        "agent.epsilon_decay_steps=500",
        "consolidation.fisher_samples=64",
        "consolidation.consolidate_after_steps=400",
        "consolidation.probe_states=32",
        "env.num_envs=4",
        "run.device=cpu",
        "run.log_every=100",
    ]
    result = run_train(
        *("--config", str(PAPER), "--sequence", "random:4", "--games", "pong,breakout,enduro"),
        *("--steps-per-game", "200", "--seed", "3", "--run-dir", str(run_dir)),
        *(arg for assignment in small for arg in ("--set", assignment)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = json.loads((run_dir / "run.json").read_text())["sequence"]
    assert len(drawn) == 4 and set(drawn) == {"pong", "breakout", "enduro"}
    assert all(a != b for a, b in zip(drawn, drawn[1:]))
    assert f"training order (random:4, seed 3): {' -> '.join(drawn)}" in result.stderr
    names = sorted(path.name for path in (run_dir / "checkpoints").glob("after_*.pt"))
    assert names == sorted(f"after_{k}_{game}.pt" for k, game in enumerate(drawn, start=1))
    # consolidate_after_steps=400 with 200-step segments: a game is consolidated at its second visit only
    revisited = [game for k, game in enumerate(drawn) if game in drawn[:k]]
    assert result.stderr.count("not consolidated yet") == 4 - len(revisited)
    never = [game for game in dict.fromkeys(drawn) if drawn.count(game) < 2]  # 4 segments, 3 games: two of them
    before_training = result.stderr.split("run directory")[0]
    assert f"warning: {', '.join(never)} will never be consolidated" in before_training
    # epsilon_clock: game: the revisited game's epsilon goes on falling across its visits, never restarts
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    (game,) = revisited
    epsilons = [event.value for event in sorted(events.Scalars(f"charts/{game}/epsilon"), key=lambda e: e.step)]
    assert len(epsilons) == 4 and epsilons == sorted(epsilons, reverse=True) and epsilons[-1] < 0.3, epsilons
