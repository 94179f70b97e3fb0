import math

import pytest
import torch

from agents.optim import CentredRMSProp


def test_centred_rmsprop_matches_hand_computed_steps():
    """theta <- theta - lr g / sqrt(n - m^2 + eps), n and m running means of g^2 and g."""
    param = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = CentredRMSProp([param], lr=0.1, alpha=0.5, eps=0.01)
    theta, n, m = 1.0, 0.0, 0.0
    for grad in (0.2, -0.1, 0.3):
        param.grad = torch.tensor([grad])
        optimizer.step()
        n, m = 0.5 * n + 0.5 * grad**2, 0.5 * m + 0.5 * grad
        theta -= 0.1 * grad / math.sqrt(n - m**2 + 0.01)
        assert param.item() == pytest.approx(theta, rel=1e-6)


def test_parameters_without_gradient_are_left_alone():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = CentredRMSProp([used, unused])
    used.grad = torch.ones(2)
    optimizer.step()
    assert not torch.equal(used, torch.ones(2)) and torch.equal(unused, torch.ones(2))
    assert unused not in optimizer.state
