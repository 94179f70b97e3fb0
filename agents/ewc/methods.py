"""What keeps earlier games: one small interface the learner calls, one class per method.

The learner asks `penalty(network)` at every update, says which game it trains with `train_on(game)`
before each, and calls `end_game(...)` at every game boundary; nothing else in the training loop
knows which method runs.

- `finetune`: no term (the EWC paper's "SGD" baseline: plain sequential training).
- `ewc` (Kirkpatrick et al. 2017): L = L_TD + sum_g (lambda/2) sum_i F_g,i (theta_i - theta*_g,i)^2,
  one quadratic per game g, anchored at theta*_g (the weights when game g ended) and weighted by
  that game's diagonal Fisher F_g. A revisited game replaces its own quadratic at the revisit's end;
  while it trains, its old quadratic applies or not as `own_term_on_revisit` says.
- `online-ewc` (Schwarz et al. 2018; Huszar 2018): one running quadratic, F* <- gamma F* + F_new,
  anchored at the latest theta*.
- `l2`: `ewc` with F = 1 everywhere (the paper's L2 baseline).
- `replay`: no term; part of every batch is rehearsed from earlier games (agents/rehearsal.py), the
  baseline continual-RL work compares against. `<method>+replay` (e.g. `ewc+replay`) adds the
  rehearsal to a method's penalty.

A sum of quadratics is one quadratic, so every method keeps just
    A = sum_g F_g,   mu = (sum_g F_g theta*_g) / A,   c = sum_g F_g theta*_g^2 - A mu^2
and evaluates (lambda/2) [ sum_i A_i (theta_i - mu_i)^2 + c ]: O(P) memory and time per update
however many games came before, with no cancellation between large terms in float32.
Only the shared weights are penalised; per-game biases and gains are each game's own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.network import QNetwork

Fisher = dict[str, torch.Tensor]


def _detached(network: QNetwork) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in network.shared_parameters().items()}


class Consolidation:
    """`finetune`: no consolidation term; the base every method extends."""

    name = "finetune"

    def __init__(self, strength: float = 0.0):
        self.strength = strength

    def penalty(self, network: QNetwork) -> torch.Tensor:
        """The term added to the TD loss (a scalar tensor on the network's device)."""
        return network.layers[0].weight.new_zeros(())

    def train_on(self, game: str) -> None:
        """Called before every update on `game` (cheap when the game has not changed since the last)."""

    def end_game(self, game: str, network: QNetwork, compute_fisher: Callable[[], Fisher]) -> Fisher | None:
        """Called when `game` has finished training; returns the Fisher it computed, if any."""
        return None

    def get_state(self) -> dict[str, object]:
        return {"name": self.name}

    def set_state(self, state: dict[str, object]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint holds {state.get('name')!r} consolidation, this run uses {self.name!r}")


class WeightedSquares(torch.autograd.Function):
    """sum_i A_i (theta_i - mu_i)^2 over lists of tensors; its gradient 2 A (theta - mu) is kept from
    the forward pass.

    This runs at every update. Left to autograd it takes about twice the passes over the weights and
    one kernel per op per tensor, forward and backward (half the ops, twice the time on a CPU);
    here each step is one multi-tensor (`_foreach_`) op, fused across tensors on a GPU, and the
    backward is a single one.
    """

    @staticmethod
    def forward(ctx, precision: list[torch.Tensor], anchor: list[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        differences = torch._foreach_sub(params, anchor)
        weighted = torch._foreach_mul(differences, precision)  # A (theta - mu)
        ctx.save_for_backward(*weighted)
        torch._foreach_mul_(differences, weighted)  # A (theta - mu)^2
        return torch.stack([terms.sum() for terms in differences]).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, *torch._foreach_mul(ctx.saved_tensors, 2 * grad)


class QuadraticConsolidation(Consolidation):
    """(lambda/2) [ sum_i A_i (theta_i - mu_i)^2 + c ]: the one quadratic every method reduces to."""

    def __init__(self, strength: float):
        super().__init__(strength)
        self.precision: dict[str, torch.Tensor] = {}  # A
        self.anchor: dict[str, torch.Tensor] = {}  # mu
        self.offset = 0.0  # c, so that the value (not only the gradient) equals the explicit sum

    def penalty(self, network: QNetwork) -> torch.Tensor:
        if not self.precision:
            return super().penalty(network)
        names, params = zip(*network.shared_parameters().items())
        precision, anchor = [self.precision[name] for name in names], [self.anchor[name] for name in names]
        return 0.5 * self.strength * (WeightedSquares.apply(precision, anchor, *params) + self.offset)

    def _set_quadratics(self, quadratics: list[tuple[Fisher, Fisher]]) -> None:
        """Fold sum_g F_g (theta - theta*_g)^2 into A (theta - mu)^2 + c, in float64 (no quadratic: no penalty)."""
        self.precision, self.anchor, offset = {}, {}, 0.0
        for name in quadratics[0][0] if quadratics else ():
            fishers = [f[name].double() for f, _ in quadratics]
            anchors = [a[name].double() for _, a in quadratics]
            precision = sum(fishers)
            weighted = sum(f * a for f, a in zip(fishers, anchors))
            mean = torch.where(precision > 0, weighted / precision.clamp_min(1e-300), 0.0)
            offset += float(sum((f * a.square()).sum() for f, a in zip(fishers, anchors)) - (precision * mean.square()).sum())
            dtype = quadratics[0][0][name].dtype
            self.precision[name], self.anchor[name] = precision.to(dtype), mean.to(dtype)
        self.offset = offset

    def get_state(self) -> dict[str, object]:
        return {**super().get_state(), "precision": self.precision, "anchor": self.anchor, "offset": self.offset}

    def set_state(self, state: dict[str, object]) -> None:
        super().set_state(state)
        self.precision, self.anchor = dict(state["precision"]), dict(state["anchor"])
        self.offset = float(state["offset"])


class EWC(QuadraticConsolidation):
    """One quadratic per game, kept separately (F_g, theta*_g) so a revisit replaces its own.

    The penalty in force while game t trains sums the terms of every consolidated game g, except
    g = t when `own_term_on_revisit` is False (agents/ewc/config.py says why one may want either).
    """

    name = "ewc"

    def __init__(self, strength: float, own_term_on_revisit: bool = True):
        super().__init__(strength)
        self.own_term_on_revisit = own_term_on_revisit
        self.per_game: dict[str, dict[str, Fisher]] = {}
        self.training: str | None = None  # the game being trained; None between games

    def game_fisher(self, network: QNetwork, compute_fisher: Callable[[], Fisher]) -> Fisher:
        return compute_fisher()

    def train_on(self, game: str) -> None:
        """Refold the terms in force when the trained game changes and a game's own term may be left out."""
        if game != self.training:
            self.training = game
            if not self.own_term_on_revisit:
                self._fold_terms_in_force()

    def end_game(self, game: str, network: QNetwork, compute_fisher: Callable[[], Fisher]) -> Fisher:
        fisher = self.game_fisher(network, compute_fisher)
        self.per_game[game] = {"fisher": fisher, "anchor": _detached(network)}
        self.training = None  # between games every term is in force
        self._fold_terms_in_force()
        return fisher

    def _fold_terms_in_force(self) -> None:
        """sum_g F_g (theta - theta*_g)^2 over the consolidated games g, the trained one left out if asked."""
        left_out = None if self.own_term_on_revisit else self.training
        self._set_quadratics([(term["fisher"], term["anchor"]) for game, term in self.per_game.items() if game != left_out])

    def get_state(self) -> dict[str, object]:
        return {**super().get_state(), "per_game": self.per_game, "training": self.training}

    def set_state(self, state: dict[str, object]) -> None:
        super().set_state(state)
        self.per_game = {game: dict(term) for game, term in state["per_game"].items()}
        self.training = state.get("training")  # absent from checkpoints written before it was kept


class L2(EWC):
    """EWC with F = 1 for every weight: distance from each earlier game's end point."""

    name = "l2"

    def game_fisher(self, network: QNetwork, compute_fisher: Callable[[], Fisher]) -> Fisher:
        return {name: torch.ones_like(param) for name, param in network.shared_parameters().items()}


class OnlineEWC(QuadraticConsolidation):
    """F* <- gamma F* + F_new, anchored at the latest theta* (Schwarz et al. 2018)."""

    name = "online-ewc"

    def __init__(self, strength: float, gamma: float = 1.0):
        super().__init__(strength)
        self.gamma = gamma

    def end_game(self, game: str, network: QNetwork, compute_fisher: Callable[[], Fisher]) -> Fisher:
        fisher = compute_fisher()
        running = {name: self.gamma * self.precision[name] + f for name, f in fisher.items()} if self.precision else fisher
        self._set_quadratics([(running, _detached(network))])
        return fisher


PENALTIES: dict[str, Callable[[float, float, bool], Consolidation]] = {
    "ewc": lambda strength, online_gamma, own_term_on_revisit: EWC(strength, own_term_on_revisit),
    "online-ewc": lambda strength, online_gamma, own_term_on_revisit: OnlineEWC(strength, online_gamma),
    "l2": lambda strength, online_gamma, own_term_on_revisit: L2(strength, own_term_on_revisit),
    "finetune": lambda strength, online_gamma, own_term_on_revisit: Consolidation(),
}
"""penalty -> factory(lambda, online_gamma, own_term_on_revisit). A new penalty is a class above and a line here."""

REHEARSAL = "+replay"
METHODS: dict[str, str] = {
    **{name: name for name in PENALTIES},
    "replay": "finetune",
    **{name + REHEARSAL: name for name in PENALTIES if name != "finetune"},
}
"""`--method` -> its penalty: each penalty alone, `replay` (fine-tuning with rehearsal) and each
other penalty with rehearsal (`ewc+replay`, ...)."""


def penalty_of(method: str) -> str:
    """The penalty a method adds to the TD loss: `ewc+replay` -> `ewc`, `replay` -> `finetune`."""
    return METHODS[method]


def has_penalty(method: str) -> bool:
    """Whether a method adds a consolidation term (weighed by lambda): all but `finetune` and `replay`."""
    return penalty_of(method) != "finetune"


def rehearses(method: str) -> bool:
    """Whether a method mixes earlier games' transitions into its batches (agents/rehearsal.py)."""
    return method != penalty_of(method)


def make_consolidation(
    method: str, strength: float, online_gamma: float = 1.0, own_term_on_revisit: bool = True
) -> Consolidation:
    """The penalty of `--method` (agents/ewc/config.py documents each setting); its rehearsal, if any,
    is built beside it (agents/build.py)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return PENALTIES[penalty_of(method)](strength, online_gamma, own_term_on_revisit)
