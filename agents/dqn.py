"""Double DQN: targets, loss, one gradient update, epsilon-greedy acting and the epsilon schedule.

The learner adds whatever its consolidation (agents/ewc/methods.py) asks for to the TD loss and
knows nothing else about it: EWC, online EWC, L2 and plain fine-tuning differ only there.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from agents.compiled import compile_function
from agents.config import AgentConfig
from agents.cuda_graph import GraphedStep, resolve_update_mode
from agents.ewc.methods import Consolidation
from agents.network import QNetwork
from agents.optim import make_optimizer
from agents.replay import Transitions


def epsilon_at(step_in_game: int, config: AgentConfig, steps_per_game: int) -> float:
    """Linear epsilon from `epsilon_start` to `epsilon_end`, restarting at every game.

    It stays at the start value for `epsilon_decay_start` steps of the game, then falls over
    `epsilon_decay_steps` steps (or `epsilon_decay_fraction` of the game when that is 0).
    """
    decay_steps = config.epsilon_decay_steps or max(1, int(config.epsilon_decay_fraction * steps_per_game))
    progress = min(1.0, max(0.0, (step_in_game - config.epsilon_decay_start) / decay_steps))
    return config.epsilon_start + progress * (config.epsilon_end - config.epsilon_start)


def double_dqn_targets(
    q_online_next: torch.Tensor,
    q_target_next: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """y = r + gamma * discount * Q_target(s', argmax_a Q_online(s', a))  (van Hasselt et al. 2016).

    The online network picks the action and the target network values it, which removes most of
    DQN's overestimation. `discount_t` is 0 after a termination, 1 after a time-limit truncation.
    """
    best_next = q_online_next.argmax(dim=1, keepdim=True)
    return r_t + gamma * discount_t * q_target_next.gather(1, best_next).squeeze(1)


@torch.no_grad()
def epsilon_greedy(
    network: QNetwork, observations: torch.Tensor, game: str, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """Epsilon-greedy actions for a batch of observations, chosen on the network's device.

    Each observation independently gets a uniformly random action with probability epsilon and
    argmax_a Q(s, a) otherwise. Training and evaluation both act through this function.
    """
    greedy = network(observations, game).argmax(dim=1)
    n = observations.shape[0]
    explore = torch.rand(n, device=greedy.device, generator=generator) < epsilon
    random = torch.randint(network.num_actions, (n,), device=greedy.device, generator=generator)
    return torch.where(explore, random, greedy)


@dataclass
class UpdateStats:
    """Device tensors of one update; read them (a GPU sync) only when logging."""

    td_loss: torch.Tensor
    consolidation: torch.Tensor
    q_mean: torch.Tensor


def optimizer_flags(config: AgentConfig, device: torch.device, update_mode: str) -> dict[str, bool]:
    """How the optimizer's step runs (never what it computes).

    `capturable` keeps the step counter on the GPU, so that the step can run inside a CUDA graph.
    On a CPU, Adam's `fused` kernel is about 8x faster than its default loop over tensors (0.9 ms
    instead of 7.5 ms per step for the Nature CNN) and agrees with it to float rounding.
    """
    if update_mode == "cuda-graph":
        return {"capturable": True}
    if device.type == "cpu" and config.optimizer == "adam":
        return {"fused": True}
    return {}


def set_optimizer_flags(optimizer: torch.optim.Optimizer, flags: dict[str, bool]) -> None:
    """Make a loaded optimizer state run as this learner runs it, whatever device or mode saved it.

    `load_state_dict` keeps the saving run's `capturable`/`fused` choice, which may not work here (a
    capturable step fails on a CPU); those keep each `step` counter on its parameter's device, the
    default implementation on the host.
    """
    for group in optimizer.param_groups:
        group["capturable"] = flags.get("capturable", False)
        if "fused" in group:
            group["fused"] = flags.get("fused")
        on_device = group["capturable"] or group.get("fused")
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(param.device if on_device else "cpu", torch.float32)


class DQNLearner:
    """Online and target networks, the optimizer and the update rule."""

    def __init__(self, network: QNetwork, config: AgentConfig, consolidation: Consolidation):
        self.online = network
        self.target = copy.deepcopy(network).requires_grad_(False)
        self.config = config
        self.consolidation = consolidation
        device = network.layers[0].weight.device
        self.update_mode = resolve_update_mode(config.update_mode, device)
        self.optimizer_flags = optimizer_flags(config, device, self.update_mode)
        self.optimizer = make_optimizer(
            network.parameters(), config.optimizer, config.learning_rate, config.adam_eps, **self.optimizer_flags
        )
        self.updates = 0
        self._loss_terms = compile_function(self.loss_terms) if self.update_mode == "compiled" else self.loss_terms
        self._graph: GraphedStep | None = None  # captured for `_graph_game`; dropped by start_game()
        self._graph_game: str | None = None

    def td_loss(self, batch: Transitions, game: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Huber loss between Q(s, a) and the Double DQN target, mean or sum over the batch
        (`loss_reduction`); also returns Q(s, a). Huber with delta 1 is DQN's "TD error clipped to
        [-1, 1]": its gradient is clip(Q(s, a) - y, -1, 1) times that of Q(s, a)."""
        q_taken = self.online(batch.s_tm1, game).gather(1, batch.a_tm1.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            targets = double_dqn_targets(
                self.online(batch.s_t, game),
                self.target(batch.s_t, game),
                batch.r_t,
                batch.discount_t,
                self.config.gamma,
            )
        return F.smooth_l1_loss(q_taken, targets, reduction=self.config.loss_reduction), q_taken

    def loss_terms(self, game: str | None, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TD loss, consolidation term and Q(s, a): the forward pass that `compiled` mode compiles."""
        td_loss, q_taken = self.td_loss(Transitions(*batch), game)
        return td_loss, self.consolidation.penalty(self.online), q_taken

    def gradient_step(self, game: str, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TD loss + consolidation term, backward, clipping, optimizer step: what a CUDA graph captures.

        Returns the device tensors of UpdateStats (td_loss, consolidation, q_mean), in that order.
        """
        # A game without its own biases and gains runs the network as any other: passing None then
        # lets compiled code serve every such game without tracing it again.
        td_loss, penalty, q_taken = self._loss_terms(game if game in self.online.modulation else None, *batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward_clipped(td_loss, penalty)
        self.optimizer.step()
        return td_loss.detach(), penalty.detach(), q_taken.detach().mean()

    def backward_clipped(self, td_loss: torch.Tensor, penalty: torch.Tensor) -> None:
        """Gradients of td_loss + penalty, with `max_grad_norm` applied where `grad_clip_scope` says:

            total:  g = clip(grad(L_TD + P))
            td:     g = clip(grad L_TD) + grad P
        where clip(v) = v * min(1, max_grad_norm / ||v||_2) over every parameter together.
        """
        if self.config.grad_clip_scope == "td":
            td_loss.backward()
            nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)
            if penalty.requires_grad:  # fine-tuning, and any method before its first game ends, has none
                penalty.backward()
            return
        (td_loss + penalty).backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)

    def update(self, batch: Transitions, game: str) -> UpdateStats:
        """One gradient step (eager or a replayed CUDA graph); syncs the target when due."""
        if self.update_mode == "cuda-graph":
            if self._graph is None or self._graph_game != game:
                step = functools.partial(self.gradient_step, game)
                self._graph, self._graph_game = GraphedStep(step, batch, self.online, self.optimizer), game
            stats = self._graph(*batch)
        else:
            stats = self.gradient_step(game, *batch)
        self.updates += 1
        if self.updates % self.config.target_update_every == 0:
            self.sync_target()  # copies into the target's weights in place: a captured graph stays valid
        return UpdateStats(*stats)

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    def act(self, observations: torch.Tensor, game: str, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        """Epsilon-greedy actions of the online network (see `epsilon_greedy`)."""
        return epsilon_greedy(self.online, observations, game, epsilon, generator)

    def start_game(self) -> None:
        """A new game: the target starts from the current network, Adam's moments are kept.

        A captured update is dropped: the consolidation term may hold new tensors since the last game.
        """
        self.sync_target()
        self._graph = None

    def get_state(self) -> dict[str, object]:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def set_state(self, state: dict[str, object]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_optimizer_flags(self.optimizer, self.optimizer_flags)
        self.updates = int(state["updates"])
        self._graph = None  # the optimizer state tensors were replaced
