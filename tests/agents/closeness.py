"""Closeness checks that say by how much: every failure shows the largest absolute and relative
difference, where, and how that compares with one update's change of the same tensor.

A difference means little alone: 1e-5 is a tenth of an Adam step at learning rate 1e-4, and a
hundredth at 1e-3. These helpers put the size of one update next to it, so a failure tells float
drift (a small share of a step) from a wrong step (a large share).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def difference_report(actual: torch.Tensor, expected: torch.Tensor, step: float | None = None) -> str:
    """Largest |actual - expected| and where, largest relative difference, and the share of one update step."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    difference = (actual - expected).abs()
    if difference.numel() == 0:
        return "empty tensors"
    where = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
    relative = torch.where(difference > 0, difference / expected.abs(), 0.0)
    report = (
        f"largest |difference| {float(difference.max()):.3g} at {where} "
        f"(expected {float(expected[where]):.8g}, got {float(actual[where]):.8g}); "
        f"largest relative difference {float(relative.max()):.3g}; |expected| up to {float(expected.abs().max()):.3g}"
    )
    if step is not None:
        share = float(difference.max()) / step if step > 0 else float("inf") if difference.max() > 0 else 0.0
        report += f"; one update changes this tensor by up to {step:.3g}: the difference is {share:.3g} of it"
    return report


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, *, rtol: float, atol: float, where: str, step: float | None = None
) -> None:
    """torch.testing.assert_close, its own message kept and `difference_report` added."""
    expected = expected.to(actual.device)
    torch.testing.assert_close(
        actual,
        expected,
        rtol=rtol,
        atol=atol,
        msg=lambda default: f"{where}: {difference_report(actual, expected, step)}\n{default}",
    )


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def one_update_steps(module: torch.nn.Module, update: Callable[[], object]) -> dict[str, float]:
    """Run `update` once; the largest change of each tensor of `module` in it."""
    before = weights(module)
    update()
    return {name: float((tensor - before[name]).abs().max()) for name, tensor in module.state_dict().items()}


def adam_steps(optimizer_state: dict, names: list[str]) -> dict[str, float]:
    """The largest change of each parameter the next Adam step would make, from a saved optimizer state:
    lr |m_hat| / (sqrt(v_hat) + eps), m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t).
    `names` are the parameters in the optimizer's order (a module's state_dict order, for one group)."""
    group = optimizer_state["param_groups"][0]
    (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
    steps = {}
    for index, name in zip(group["params"], names):
        state = optimizer_state["state"].get(index)
        if not state:
            continue
        t = float(state["step"])
        m_hat = state["exp_avg"].double() / (1 - beta1**t)
        v_hat = state["exp_avg_sq"].double() / (1 - beta2**t)
        steps[name] = float((lr * m_hat.abs() / (v_hat.sqrt() + eps)).max())
    return steps
