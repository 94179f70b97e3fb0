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


def test_centred_rmsprop_equals_its_per_tensor_loop():
    """The multi-tensor step against the formula applied tensor by tensor (float32, several steps and
    shapes, one parameter without a gradient): equal to the bit on a CPU."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 3, 3, 3)]
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    skipped = torch.nn.Parameter(torch.randn(4, generator=generator))
    expected = [param.detach().clone() for param in params]
    n, m = [torch.zeros_like(p) for p in expected], [torch.zeros_like(p) for p in expected]
    optimizer = CentredRMSProp(params + [skipped], lr=0.01, alpha=0.95, eps=0.01)
    for _ in range(4):
        grads = [torch.randn(shape, generator=generator) * 0.1 for shape in shapes]
        for param, grad in zip(params, grads):
            param.grad = grad.clone()
        optimizer.step()
        for theta, square, mean, grad in zip(expected, n, m, grads):
            square.mul_(0.95).addcmul_(grad, grad, value=0.05)
            mean.mul_(0.95).add_(grad, alpha=0.05)
            theta.addcdiv_(grad, square.addcmul(mean, mean, value=-1).add_(0.01).sqrt_(), value=-0.01)
    assert all(torch.equal(param, theta) for param, theta in zip(params, expected))
    assert skipped not in optimizer.state
