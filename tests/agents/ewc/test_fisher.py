"""Each Fisher estimator against a brute-force loop over single samples (float64)."""

import copy

import pytest
import torch
from torch.nn import functional as F

import agents.ewc.fisher as fisher_module
from agents.dqn import double_dqn_targets
from agents.ewc.fisher import diagonal_fisher, fisher_summary
from agents.network import QNetwork
from agents.replay import Transitions

NETWORKS = {
    "nature": dict(),  # Atari: (4, 84, 84) pixels, 18 actions
    "minatar": dict(architecture="minatar", num_actions=6, input_shape=(10, 10, 10), input_scale=1.0),
}
"""QNetwork keyword arguments of each kind of network the Fisher must handle."""


def small_setup(modulated, kind="nature"):
    torch.manual_seed(0)
    kwargs = NETWORKS[kind]
    network = QNetwork(modulated_games=["pong"] if modulated else [], **kwargs).double()
    target = QNetwork(modulated_games=["pong"] if modulated else [], **kwargs).double()
    with torch.no_grad():  # non-trivial per-game biases and gains
        for param in network.modulation.parameters():
            param.add_(0.3 * torch.randn_like(param))
    n = 4
    g = torch.Generator().manual_seed(1)
    high = 256 if network.input_scale < 1 else 2  # pixels, or MinAtar's 0/1 channels
    frames = torch.randint(0, high, (n + 1,) + network.input_shape, dtype=torch.uint8, generator=g)
    batch = Transitions(
        frames[:n],
        torch.randint(0, network.num_actions, (n,), generator=g),
        torch.randn(n, dtype=torch.float64, generator=g),
        torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64),
        frames[1:],
    )
    return network, target, batch


def brute_force(network, target, batch, estimator, game, temperature=1.0, gamma=0.99):
    """Loop over samples (and actions): F = mean_n sum_a w_a (grad of a scalar)^2."""
    params = list(network.shared_parameters().values())
    total = [torch.zeros_like(p) for p in params]
    n = batch.s_tm1.shape[0]
    for i in range(n):
        q = network(batch.s_tm1[i : i + 1], game)[0]
        a = batch.a_tm1[i]
        if estimator == "policy":
            log_pi = torch.log_softmax(q / temperature, 0)
            terms = [(log_pi[b].exp().detach(), log_pi[b]) for b in range(q.shape[0])]
        elif estimator == "q-gaussian":
            terms = [(1.0, q[a])]
        else:
            with torch.no_grad():
                y = double_dqn_targets(
                    network(batch.s_t[i : i + 1], game),
                    target(batch.s_t[i : i + 1], game),
                    batch.r_t[i : i + 1],
                    batch.discount_t[i : i + 1],
                    gamma,
                )[0]
            terms = [(1.0, F.smooth_l1_loss(q[a], y))]
        for weight, scalar in terms:
            grads = torch.autograd.grad(scalar, params, retain_graph=True)
            for acc, grad in zip(total, grads):
                acc += weight * grad.square() / n
    return dict(zip(network.shared_parameters(), total))


def check_estimator(estimator, modulated, kind, device):
    """The estimator computed on `device` against the per-sample loop on the CPU, both in float64."""
    network, target, batch = small_setup(modulated, kind)
    game = "pong" if modulated else None
    on_device = Transitions(*(x.to(device) for x in batch))
    fast = diagonal_fisher(
        copy.deepcopy(network).to(device),
        [on_device],
        game,
        estimator,
        temperature=0.7 if estimator == "policy" else 1.0,
        target_network=copy.deepcopy(target).to(device),
    )
    fast = {name: value.cpu() for name, value in fast.items()}
    slow = brute_force(network, target, batch, estimator, game, temperature=0.7)
    for name in slow:
        scale = slow[name].abs().max().item()
        assert scale > 0
        assert torch.allclose(fast[name], slow[name], rtol=1e-5, atol=1e-5 * scale), name


@pytest.mark.parametrize("estimator", ["policy", "q-gaussian", "empirical-td"])
@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_estimator_equals_per_sample_loop(estimator, modulated, kind):
    check_estimator(estimator, modulated, kind, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("estimator", ["policy", "q-gaussian", "empirical-td"])
@pytest.mark.parametrize("kind", sorted(NETWORKS))
def test_estimator_on_cuda_equals_per_sample_loop(estimator, kind):
    """On a GPU the conv gradients are squared a whole batch at once (no CPU chunking)."""
    check_estimator(estimator, True, kind, "cuda")


def test_batches_do_not_change_the_mean():
    network, target, batch = small_setup(False)
    whole = diagonal_fisher(network, [batch], None, "policy")
    halves = [Transitions(*(x[:2] for x in batch)), Transitions(*(x[2:] for x in batch))]
    split = diagonal_fisher(network, halves, None, "policy")
    assert all(torch.allclose(whole[k], split[k], rtol=1e-10) for k in whole)


def test_cpu_chunking_of_conv_gradients_does_not_change_the_fisher(monkeypatch):
    """Per-sample conv gradients are squared a few samples at a time on a CPU (CPU_CHUNK_BYTES, about
    7 Nature-CNN samples at once, so the 4 samples here are one chunk by default: the test above
    never chunks); one sample per chunk and the whole batch in one give the same."""
    network, _, batch = small_setup(True)
    game = "pong"
    monkeypatch.setattr(fisher_module, "CPU_CHUNK_BYTES", 1 << 40)  # one chunk
    whole = diagonal_fisher(network, [batch], game, "policy")
    monkeypatch.setattr(fisher_module, "CPU_CHUNK_BYTES", 1)  # a chunk per sample
    chunked = diagonal_fisher(network, [batch], game, "policy")
    for name in whole:
        assert whole[name].abs().max() > 0
        assert torch.allclose(whole[name], chunked[name], rtol=1e-10, atol=0), name


def test_mean_of_squares_is_not_square_of_mean():
    """The bug this module avoids: squaring a minibatch-mean gradient shrinks the Fisher."""
    network, _, batch = small_setup(False)
    fisher = diagonal_fisher(network, [batch], None, "q-gaussian")
    q = network(batch.s_tm1).gather(1, batch.a_tm1.unsqueeze(1)).mean()
    mean_grad = torch.autograd.grad(q, [network.layers[-1].weight])[0]
    assert fisher["layers.4.weight"].sum() > 1.5 * mean_grad.square().sum()


def test_summary_of_a_hand_made_fisher():
    """Mean and max over all weights; each layer's share is its weights' and bias's mass over the total."""
    fisher = {
        "layers.0.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "layers.0.bias": torch.tensor([0.0, 10.0]),
        "layers.1.weight": torch.tensor([[5.0, 0.0, 0.0]]),
        "layers.1.bias": torch.tensor([0.0]),
        "layers.10.weight": torch.tensor([[25.0]]),
        "layers.10.bias": torch.tensor([0.0]),
    }
    summary = fisher_summary(fisher)
    # total 1+2+3+4+10 + 5 + 25 = 50 over 4+2+3+1+1+1 = 12 weights
    assert summary == pytest.approx(
        {"mean": 50 / 12, "max": 25.0, "share_layers_0": 20 / 50, "share_layers_1": 5 / 50, "share_layers_10": 25 / 50}
    )
    assert fisher_summary({name: torch.zeros_like(f) for name, f in fisher.items()})["share_layers_0"] == 0.0


def test_summary_of_a_network_fisher_adds_up_to_one():
    network, _, batch = small_setup(False)
    summary = fisher_summary(diagonal_fisher(network, [batch], None, "policy"))
    shares = [v for k, v in summary.items() if k.startswith("share_")]
    assert len(shares) == 5 and sum(shares) == pytest.approx(1.0)
    assert summary["max"] >= summary["mean"] > 0


def test_a_network_in_channels_last_memory_has_the_same_fisher():
    """The memory format of the convolution weights (NHWC, a GPU speed setting) changes no Fisher value."""
    network, _, batch = small_setup(True)
    expected = diagonal_fisher(network, [batch], "pong", "policy")
    network.to(memory_format=torch.channels_last)
    assert network.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(diagonal_fisher(network, [batch], "pong", "policy"), expected, rtol=1e-10, atol=0)
