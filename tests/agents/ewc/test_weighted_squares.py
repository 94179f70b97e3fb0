"""The EWC penalty's hand-written gradient (agents/consolidation.py `WeightedSquares`) is autograd's."""

from __future__ import annotations

import torch

from agents.ewc.methods import WeightedSquares, make_consolidation
from agents.network import QNetwork


def test_weighted_squares_value_and_gradient_match_autograd():
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 1, 3)]
    precision = [torch.rand(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    anchor = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    params = [torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in shapes]
    assert torch.autograd.gradcheck(lambda *p: WeightedSquares.apply(precision, anchor, *p), params)
    explicit = sum((a * (p - m).square()).sum() for a, p, m in zip(precision, params, anchor))
    torch.testing.assert_close(WeightedSquares.apply(precision, anchor, *params), explicit)


def test_ewc_penalty_equals_the_sum_over_games_written_out():
    """(lambda/2) sum_g sum_i F_g,i (theta_i - theta*_g,i)^2, value and gradient, after two games."""
    torch.manual_seed(0)
    network, ewc = QNetwork(), make_consolidation("ewc", 40.0)
    for game in ("pong", "breakout"):
        ewc.end_game(game, network, lambda: {n: torch.rand_like(p) for n, p in network.shared_parameters().items()})
        with torch.no_grad():
            for param in network.parameters():
                param.add_(0.01 * torch.randn_like(param))
    params = list(network.shared_parameters().values())
    penalty = ewc.penalty(network)
    explicit = sum(
        20.0 * (term["fisher"][name] * (param - term["anchor"][name]).square()).sum()
        for term in ewc.per_game.values()
        for name, param in network.shared_parameters().items()
    )
    torch.testing.assert_close(penalty, explicit, rtol=1e-5, atol=0)
    for fast, slow in zip(torch.autograd.grad(penalty, params), torch.autograd.grad(explicit, params)):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)  # float32; A mu folds two anchors
