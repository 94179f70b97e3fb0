"""Diagonal Fisher information of the shared Q-network weights, as a mean of per-sample squares.

Every estimator here has the form

    F_i = (1/N) sum_n sum_d ( d/d theta_i  u_nd . Q(s_n) )^2

for a set of output directions u_nd in R^A per state (A = 18 actions):

- `policy` (default): the true Fisher of the Boltzmann policy pi(a|s) = softmax(Q(s,.)/tau),
  F = E_s sum_a pi(a|s) (grad log pi(a|s))^2, the sum over all actions computed exactly. Since
  grad log pi_a = (1/tau) sum_c (1[a=c] - pi_c) grad Q_c, its directions are
  u_a = sqrt(pi_a) (e_a - pi) / tau, one per action. It is a Fisher of the agent's own output
  distribution, so it needs no labels, is always positive semi-definite and does not vanish where
  the TD error happens to be small. Pick it unless you have a reason not to.
- `q-gaussian`: the Fisher of Q(s,a) read as the mean of a unit-variance Gaussian, on the replay's
  actions: F = E_(s,a) (grad Q(s,a))^2, u = e_a. Cheaper (one direction), scale tied to Q's.
- `empirical-td`: per-sample squared gradients of the Huber TD loss, F = E (grad l_TD)^2,
  u = huber'(Q(s,a) - y) e_a with the Double DQN target y held fixed. What most public DQN-EWC code
  uses; an "empirical Fisher" that shrinks where the TD error is small. For comparison.

The mean of per-sample squares is essential: squaring a minibatch-mean gradient instead divides
the estimate by about the batch size (and cancels opposite signs), a common bug.

How it is computed, exactly and without materialising per-sample gradients of all 1.7M weights:
for a layer z = Wx + b, the gradient of u.Q for one sample is delta x^T with delta = d(u.Q)/dz.
One backward pass per direction (batched with `is_grads_batched`) gives every delta; then
- linear:  sum_{n,d} (delta x^T)^2 = sum_{n,d} delta^2 (x^2)^T              (no outer products)
- conv:    per-sample weight gradient = delta_(out x positions) @ unfold(x)^T, squared and summed,
           a few samples at a time (on a CPU, gradients that stay in cache square 2-4x faster)
- bias:    sum_{n,d} (sum over positions of delta)^2.
Per-game biases and gains sit after z, so this holds with them too (they are not consolidated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from agents.dqn import double_dqn_targets
from agents.network import QNetwork
from agents.replay import FrameReplay, Transitions


@dataclass
class DirectionContext:
    """What some estimators need beside the Q-values and the batch."""

    network: QNetwork
    game: str | None
    temperature: float = 1.0
    target_network: QNetwork | None = None
    gamma: float = 0.99


CPU_CHUNK_BYTES = 8 << 20
"""On a CPU, per-sample conv gradients are squared a few samples at a time, about a cache's worth
(2-4x faster than a whole batch at once); a GPU takes the whole batch."""


def policy_directions(q_values: torch.Tensor, batch: Transitions, context: DirectionContext) -> torch.Tensor:
    """u_a = sqrt(pi_a) (e_a - pi) / tau for every action a: the exact Fisher of softmax(Q/tau)."""
    tau = context.temperature
    pi = torch.softmax(q_values / tau, dim=1)  # (N, A)
    eye = torch.eye(q_values.shape[1], device=q_values.device, dtype=q_values.dtype)
    centred = eye.unsqueeze(1) - pi.unsqueeze(0)  # (D=A, N, A): e_a - pi
    return pi.T.sqrt().unsqueeze(2) * centred / tau


def q_gaussian_directions(q_values: torch.Tensor, batch: Transitions, context: DirectionContext) -> torch.Tensor:
    """u = e_a for the replay's action a: F = E (grad Q(s, a))^2."""
    return F.one_hot(batch.a_tm1, q_values.shape[1]).to(q_values.dtype).unsqueeze(0)


def empirical_td_directions(q_values: torch.Tensor, batch: Transitions, context: DirectionContext) -> torch.Tensor:
    """u = huber'(Q(s, a) - y) e_a, the Double DQN target y held fixed: F = E (grad l_TD)^2."""
    if context.target_network is None:
        raise ValueError("the empirical-td Fisher needs the target network")
    network, game = context.network, context.game
    with torch.no_grad():
        targets = double_dqn_targets(
            network(batch.s_t, game), context.target_network(batch.s_t, game), batch.r_t, batch.discount_t, context.gamma
        )
    q_taken = q_values.gather(1, batch.a_tm1.unsqueeze(1)).squeeze(1)
    huber_slope = (q_taken - targets).clamp(-1.0, 1.0)  # d/dq of smooth_l1 with beta 1
    return huber_slope.view(1, -1, 1) * q_gaussian_directions(q_values, batch, context)


ESTIMATORS: dict[str, Callable[[torch.Tensor, Transitions, DirectionContext], torch.Tensor]] = {
    "policy": policy_directions,
    "q-gaussian": q_gaussian_directions,
    "empirical-td": empirical_td_directions,
}
"""`--fisher` -> its output directions u (D, N, A). A new estimator is a function and a line here."""


def output_directions(estimator: str, q_values: torch.Tensor, batch: Transitions, context: DirectionContext) -> torch.Tensor:
    """The directions u (D, N, A) whose per-sample squared gradients make up the estimator."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[estimator](q_values.detach(), batch, context)


def _squared_gradient_sums(layer: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum over samples and directions of (dW)^2 and (db)^2 for z = layer(x), delta = d(u.Q)/dz."""
    if isinstance(layer, torch.nn.Linear):  # delta (D, N, out), x (N, in)
        weight = torch.einsum("dno,ni->oi", delta.square(), x.square())
        return weight, delta.square().sum(dim=(0, 1))
    # Conv2d: delta (D, N, out, h, w); unfold(x) (N, in*k*k, h*w) lines up with weight.view(out, -1)
    patches = F.unfold(x, layer.kernel_size, stride=layer.stride, padding=layer.padding)
    delta_flat = delta.flatten(3)
    per_sample_bytes = delta.shape[0] * layer.weight.numel() * delta.element_size()
    chunk = max(1, CPU_CHUNK_BYTES // per_sample_bytes) if x.device.type == "cpu" else x.shape[0]
    # new_zeros, not zeros_like: a weight in channels_last memory has no (out, -1) view
    weight = layer.weight.new_zeros(layer.out_channels, layer.weight[0].numel())
    for start in range(0, x.shape[0], chunk):
        per_sample = torch.einsum("dnol,nkl->dnok", delta_flat[:, start : start + chunk], patches[start : start + chunk])
        weight += per_sample.square_().sum(dim=(0, 1))
    return weight.view(layer.weight.shape), delta.sum(dim=(3, 4)).square().sum(dim=(0, 1))


def diagonal_fisher(
    network: QNetwork,
    batches: Iterable[Transitions],
    game: str | None,
    estimator: str = "policy",
    *,
    temperature: float = 1.0,
    target_network: QNetwork | None = None,
    gamma: float = 0.99,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of `network.shared_parameters()`, averaged over every state in `batches`."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    context = DirectionContext(network, game, temperature, target_network, gamma)
    sums = {name: torch.zeros_like(param) for name, param in network.shared_parameters().items()}
    count = 0
    for batch in batches:
        taps: list = []
        q_values = network(batch.s_tm1, game, taps)
        directions = output_directions(estimator, q_values, batch, context)
        deltas = torch.autograd.grad(q_values, [z for _, z in taps], grad_outputs=directions, is_grads_batched=True)
        for index, ((x, _), delta) in enumerate(zip(taps, deltas)):
            layer = network.layers[index]
            weight_sum, bias_sum = _squared_gradient_sums(layer, x.detach(), delta)
            sums[f"layers.{index}.weight"] += weight_sum
            sums[f"layers.{index}.bias"] += bias_sum
        count += q_values.shape[0]
    if count == 0:
        raise ValueError("the Fisher needs at least one sample")
    return {name: total / count for name, total in sums.items()}


def replay_batches(replay: FrameReplay, samples: int, batch_size: int) -> Iterator[Transitions]:
    """`samples` transitions drawn uniformly from a game's replay, `batch_size` at a time."""
    for start in range(0, samples, batch_size):
        yield replay.sample(min(batch_size, samples - start))


def fisher_summary(fisher: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean and max over all weights, and each layer's share of the total Fisher mass."""
    total = sum(f.sum() for f in fisher.values())
    count = sum(f.numel() for f in fisher.values())
    summary = {"mean": float(total / count), "max": max(float(f.max()) for f in fisher.values())}
    layers = sorted({name.rsplit(".", 1)[0] for name in fisher})
    for layer in layers:
        mass = sum(f.sum() for name, f in fisher.items() if name.rsplit(".", 1)[0] == layer)
        summary[f"share_{layer.replace('.', '_')}"] = float(mass / total) if total > 0 else 0.0
    return summary
