"""configs/paper.yaml is Kirkpatrick et al.'s Table S2, and its update is DeepMind's RMSProp step."""

import copy
import json

import pytest
import torch
import yaml

from agents.build import build_learner
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
    assert agent.max_grad_norm == 50.0
    assert (agent.batch_size, agent.steps_per_update) == (32, 4)
    assert (agent.replay_capacity, agent.learning_starts) == (50_000, 50_000)
    assert agent.target_update_every * agent.steps_per_update == 7_500  # agent steps between target syncs
    assert (agent.epsilon_start, agent.epsilon_end) == (1.0, 0.01)
    assert (agent.epsilon_decay_start, agent.epsilon_decay_start + agent.epsilon_decay_steps) == (50_000, 1_050_000)
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


def deepmind_step(network, batch: Transitions, game: str, lr=2.5e-4, gamma=0.99, max_norm=50.0) -> list[torch.Tensor]:
    """One update of DeepMind's DQN (NeuralQLearner.lua: getQUpdate, qLearnMinibatch), by hand.

    delta = clip(y - Q(s, a), -1, 1) with the Double-DQN y; dw = sum over the batch of delta * dQ(s, a)/dw
    (a sum, not a mean), renormalised to max norm 50 (Table S2); g = 0.05 dw, g2 = 0.05 dw^2 (fresh
    state, decay 0.95); w <- w + lr dw / sqrt(g2 - g^2 + 0.01). Returns the new weights.
    """
    params = list(network.parameters())
    q = network(batch.s_tm1, game).gather(1, batch.a_tm1.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        q_next = network(batch.s_t, game)  # online = target at the first update
        best = q_next.argmax(dim=1, keepdim=True)
        y = batch.r_t + gamma * batch.discount_t * q_next.gather(1, best).squeeze(1)
        delta = (y - q).clamp(-1.0, 1.0)
    dw = torch.autograd.grad((q * delta).sum(), params, allow_unused=True)
    dw = [torch.zeros_like(p) if d is None else d for p, d in zip(params, dw)]
    norm = torch.sqrt(sum((d.double() ** 2).sum() for d in dw))
    scale = min(1.0, max_norm / norm.item())
    new = []
    for p, d in zip(params, dw):
        d = d * scale
        g, g2 = 0.05 * d, 0.05 * d * d
        new.append(p.detach() + lr * d / torch.sqrt(g2 - g * g + 0.01))
    return new


def test_the_paper_presets_update_is_deepminds_rmsprop_step():
    """The bug this guards: with the batch *mean* loss the same step is 32x (the batch size) too small."""
    config = build_config(PAPER)
    learner = build_learner(config, ["pong"], ATARI, torch.device("cpu"), seed=0)
    before = [p.detach().clone() for p in learner.online.parameters()]
    batch = paper_batch()
    expected = deepmind_step(copy.deepcopy(learner.online), batch, "pong")
    learner.update(batch, "pong")
    for old, new, want in zip(before, learner.online.parameters(), expected):
        torch.testing.assert_close(new.detach() - old, want - old, rtol=2e-3, atol=1e-9)

    mean_config = build_config(PAPER, ["agent.loss_reduction=mean"])
    mean_learner = build_learner(mean_config, ["pong"], ATARI, torch.device("cpu"), seed=0)
    mean_learner.update(batch, "pong")
    conv_step = (expected[0] - before[0]).abs().median()
    mean_step = (mean_learner.online.layers[0].weight.detach() - before[0]).abs().median()
    assert conv_step / mean_step == pytest.approx(32, rel=0.05)  # the bug the sum removes


def test_td_clip_scope_clips_the_td_gradient_alone():
    """grad_clip_scope=td: g = clip(grad L_TD) + grad P; total: g = clip(grad(L_TD + P))."""
    from agents.ewc.methods import make_consolidation

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
