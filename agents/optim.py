"""Centred RMSProp as DeepMind's DQN used it (Nature DQN, and the EWC paper's Atari setting).

    n <- alpha n + (1 - alpha) g^2          (squared gradient momentum 0.95)
    m <- alpha m + (1 - alpha) g            (gradient momentum 0.95)
    theta <- theta - lr g / sqrt(n - m^2 + eps)        (min squared gradient eps = 0.01)

`torch.optim.RMSprop(centered=True)` adds eps *outside* the root, g / (sqrt(n - m^2) + eps):
with eps = 0.01 and the small gradients of DQN its denominator is ~0.01 where DeepMind's is ~0.1,
so it steps about ten times further at the same learning rate. Hence this class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class CentredRMSProp(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 2.5e-4, alpha: float = 0.95, eps: float = 0.01):
        if lr <= 0 or not 0 <= alpha < 1 or eps <= 0:
            raise ValueError(f"invalid CentredRMSProp settings lr={lr}, alpha={alpha}, eps={eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        """One step over every parameter with a gradient as eight multi-tensor (`_foreach_`) ops, each
        one launch (or a few) for all tensors on a GPU instead of one per tensor; the same per-element
        arithmetic as the loop over tensors, so the same results to the bit on a CPU."""
        loss = None if closure is None else closure()
        for group in self.param_groups:
            alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
            params = [param for param in group["params"] if param.grad is not None]  # other games' untouched
            if not params:
                continue
            for param in params:
                state = self.state[param]
                if not state:
                    state["square_avg"] = torch.zeros_like(param)
                    state["grad_avg"] = torch.zeros_like(param)
            grads = [param.grad for param in params]
            square_avgs = [self.state[param]["square_avg"] for param in params]
            grad_avgs = [self.state[param]["grad_avg"] for param in params]
            torch._foreach_mul_(square_avgs, alpha)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)  # n
            torch._foreach_mul_(grad_avgs, alpha)
            torch._foreach_add_(grad_avgs, grads, alpha=1 - alpha)  # m
            denominators = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)  # n - m^2
            torch._foreach_add_(denominators, eps)
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-lr)
        return loss


def adam(params: Iterable[torch.nn.Parameter], learning_rate: float, adam_eps: float, **flags: bool) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=learning_rate, eps=adam_eps, **flags)


def centred_rmsprop(
    params: Iterable[torch.nn.Parameter], learning_rate: float, adam_eps: float, **flags: bool
) -> torch.optim.Optimizer:
    """Nature DQN's settings (alpha 0.95, eps 0.01 inside the root); no host-side state, so capturable as is."""
    return CentredRMSProp(params, lr=learning_rate, alpha=0.95, eps=0.01)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": adam, "rmsprop": centred_rmsprop}
"""`agent.optimizer` -> factory(params, learning_rate, adam_eps, **flags)."""


def make_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, learning_rate: float, adam_eps: float, **flags: bool
) -> torch.optim.Optimizer:
    """The optimizer called `name`, run as `flags` say (see agents/dqn.py's `optimizer_flags`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, learning_rate, adam_eps, **flags)
